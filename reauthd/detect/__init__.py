"""Detection: sources (auth-files poll, RESP errors stream, probes, CPAMP) → evidence → confirmed verdicts."""
