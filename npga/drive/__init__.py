"""Driving a trained avatar from video: fit its code and head pose to each frame, then reenact.

`fit` fits one avatar to frames by analysis by synthesis, `foreground` estimates the driver's matte,
`video` runs the fit over a whole video (checked inputs, resume, the tracking file) and `reenact` turns
tracked codes into the driven avatar's cameras and poses. The package depends on the model, the renderer and
the data readers, never on training or the command layer (import-linter checks it).
"""
