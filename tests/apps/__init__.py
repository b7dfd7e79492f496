"""Third-party apps that tests run as replicas through [replicas] command."""
