"""What the tests build for themselves instead of downloading: small captures, avatars and head models."""
