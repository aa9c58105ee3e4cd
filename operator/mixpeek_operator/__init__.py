"""mixpeek-operator: manage Mixpeek bucket sync configurations as Kubernetes objects."""

__version__ = "0.1.0"
