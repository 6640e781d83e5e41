"""Face crops: alignment to the ArcFace template and the quality gates (size, blur)."""
