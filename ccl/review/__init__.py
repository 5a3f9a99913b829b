"""What a coder reviews: a coded note with each code's evidence at its offsets, the model's
reach, guideline flags in words, and a self-contained HTML review page (issue 26)."""
