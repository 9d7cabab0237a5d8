"""What backs a flag beyond attention: interventions, sanity checks, faithfulness, the evidence stage."""
