"""In-context evaluation of trained models on held-out tasks."""
