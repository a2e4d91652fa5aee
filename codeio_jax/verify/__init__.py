"""Execution-verified judging: answer extraction, comparison, verdicts, benchmark scoring."""
