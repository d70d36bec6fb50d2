"""Read-models over every domain for people and auditors: platform KPIs and the evidence bundle export."""
