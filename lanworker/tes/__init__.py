"""GA4GH TES 1.1 front door: `worker.py serve` turns TES tasks into container tasks on the
queue and projects the workers' state events back into a task store."""
