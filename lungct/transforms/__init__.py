"""MONAI dictionary transforms of the preprocessing chain, one concern per module.

Each transform works on the dict the chain passes along: "image" (a MetaTensor, channel first, affine in
RAS mm), label keys added by the steps ("body", "lungs", "roi"), and "case", a dict of flags, warnings
and measurements that ends up in case.json. Import them from their modules (lungct.transforms.body, ...).
"""
