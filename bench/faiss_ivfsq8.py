"""anchors.py in-process backend: FAISS IndexIVFScalarQuantizer (8-bit), the same nlist rule as
anchors.py's IVF-Flat (round(4 sqrt(n))), inner product on unit vectors. Used with
  anchors.py --py bench/faiss_ivfsq8.py:FaissIVFSQ8"""
import math
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "tools"))
from anchors import FaissBackend  # noqa: E402


class FaissIVFSQ8(FaissBackend):
    label = "faiss-ivfsq8"

    def build(self, xb):
        import faiss
        self.nlist = int(self.kw.get("nlist") or max(1, round(4 * math.sqrt(self.n))))
        self.label = "faiss-ivfsq8(nlist=%d)" % self.nlist
        self.quantizer = faiss.IndexFlatIP(self.dim)
        self.index = faiss.IndexIVFScalarQuantizer(self.quantizer, self.dim, self.nlist, faiss.ScalarQuantizer.QT_8bit,
                                                   faiss.METRIC_INNER_PRODUCT)
        t0 = time.perf_counter()
        self.index.train(xb)
        t1 = time.perf_counter()
        self.index.add(xb)
        return dict(train_s=t1 - t0, add_s=time.perf_counter() - t1, nlist=self.nlist)

    def params(self):
        return [p for p in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512) if p <= self.nlist]

    def set_param(self, p):
        self.index.nprobe = p
