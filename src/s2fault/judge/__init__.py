"""The judge: the console analyzer, the workload's result lines, and the verdict."""
