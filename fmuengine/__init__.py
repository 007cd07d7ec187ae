"""The simulation engine: FMU inspection, the runner and the sandbox. No Django here."""
