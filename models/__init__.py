"""Network code and model loading. Works without ComfyUI."""
