"""Oversight of a self-improving run: monitors, a policy of rules and actions, tamper-evident records,
independent evaluation, gated promotion and a readable report (see ARCHITECTURE.md, "Oversight")."""
