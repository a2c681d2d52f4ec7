"""NVP as a nerfstudio method: a neural field f(x, y, t) -> RGB of a video."""
