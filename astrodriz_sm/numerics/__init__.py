"""Pure numerics of the pipeline, on arrays, tables and WCS objects already in memory.

PSF-fitted source positions (:mod:`.centroids`), the overlap similarity of a product's verification
(:mod:`.overlap`) and the matched pairs of an a posteriori fit (:mod:`.matches`). Nothing here reads or
writes a file or imports the rest of the package, so each function can be tested, and reused, on its
own; the handlers read the files and hand the arrays in.
"""
