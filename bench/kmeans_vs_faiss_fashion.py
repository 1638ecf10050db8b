# k-means objective, chrysalis vs FAISS at 10 iterations on Fashion-MNIST. Needs our centroids in /tmp/our_cent.f32
# (980 x 784 float32, from kmeans_train; see bench/out/kmeans_fashion_10iter.txt). Run: /usr/bin/python3 bench/kmeans_vs_faiss_fashion.py
import numpy as np, faiss, time
a = np.fromfile('bench/out/data/anchors-cache/fashion-mnist/base.fvecs', dtype=np.int32); d = a[0]
x = a.reshape(-1, d + 1)[:, 1:].view(np.float32).copy()
k = 980
t0 = time.time()
km = faiss.Kmeans(int(d), k, niter=10, seed=1234, spherical=True, max_points_per_centroid=256, verbose=False)
km.train(x)
tf = time.time() - t0
ours = np.fromfile('/tmp/our_cent.f32', dtype=np.float32).reshape(k, d)
def obj(c):
    idx = faiss.IndexFlatL2(int(d)); idx.add(c); D, _ = idx.search(x, 1); return float(D.mean())
of, oo = obj(km.centroids), obj(ours)
print("fashion-mnist k=980, 10 iterations: objective (mean squared L2 to nearest centroid) FAISS %.6f ours %.6f ratio ours/FAISS %.4f; FAISS kmeans %.1f s" % (of, oo, oo / of, tf))
