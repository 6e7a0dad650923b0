"""depth_pipeline package."""
