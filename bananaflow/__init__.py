"""bananaflow: prompts to finished, stored images with Nano Banana Pro (AI Studio and Vertex AI)."""

__version__ = "0.1.0"
