"""What torch knows uccl by: the backend's name and the devices it serves."""

BACKEND_NAME = "uccl"
DEVICES = ["cpu", "cuda"]
