"""hsikit's synthetic sample (README.md here). Installed as ``hsikit.sample_data``: the wheel ships only the
default classifier ``sample_model.safetensors`` (what ``hsikit classify`` uses without ``--model``); the sample
scene and labels stay in the source tree."""
