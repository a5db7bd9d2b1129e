"""Web: the model server (FastAPI) that devices pull bundles from and send heartbeats to."""
