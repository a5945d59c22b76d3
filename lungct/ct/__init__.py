"""CT: the preprocessing chain, the CT segmenter, lesion synthesis and lung densitometry."""
