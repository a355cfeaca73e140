"""One readable recipe per training stage, each over the shared loop in `kdcompress.training.loop`."""
