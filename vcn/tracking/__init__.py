"""Stage 1 tracking: BoT-SORT per shot (boxmot, no re-identification) and time-based crop sampling."""
