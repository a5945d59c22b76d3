"""Chest radiographs: the 256 x 256 input chain of pipelines/cxr-2d.yaml (transforms), the radiograph
segmenter, post-processing back to the radiograph's own pixels with right/left labels and areas, and
training pairs. Arrays are (rows, cols) as displayed; reading lives in lungct.io.radiograph."""
