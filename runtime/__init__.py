"""Host services (model folders, progress, interruption) and the headless workflow runner."""
