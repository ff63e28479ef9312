"""Face pipeline on onnxruntime: image decoding, detection, alignment, embedding, calibrated comparison.

Modules (import what you need; importing :mod:`faces` itself loads nothing heavy):

* :mod:`faces.images`: ``probe_image`` (cheap upload validation), ``decode_image`` (BGR array)
* :mod:`faces.packs`: ``load_pack`` builds a :class:`faces.pipeline.FacePipeline` from a models directory
* :mod:`faces.pipeline`: ``FacePipeline.analyze`` / ``compare_embeddings``
* :mod:`faces.detection`, :mod:`faces.alignment`, :mod:`faces.embedding`, :mod:`faces.runtime`: the parts
* :mod:`faces.catalog`, :mod:`faces.fetch`: known model files, licences, checksums, downloads
* :mod:`faces.calibration`, :mod:`faces.fit_calibration`: cosine to calibrated similarity
* :mod:`faces.false_match`: thresholds per false-match rate over every impostor pair of a set
* :mod:`faces.quality`: per-face quality measures and the NONE/LOW/MEDIUM/HIGH quality bars
* :mod:`faces.evaluation`: verification metrics (ROC, TAR@FAR, EER, AUC, k-fold accuracy)
"""

from faces.errors import FaceError, ImageTooLargeError, InvalidImageError, ModelError

__all__ = ["FaceError", "ImageTooLargeError", "InvalidImageError", "ModelError"]
