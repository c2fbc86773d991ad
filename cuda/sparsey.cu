// Sparsey macrocolumn kernels (CuPy RawModule; loaded by spiking/memory/cuda.py).
//
// Bit packing: bit j%64 of word j//64 holds input j (spiking.memory.csa.pack_bits).
//
// sparsey_packed_sums: u[b, i] = popcount(x_b AND W_i) summed over words     (grid: B x ceil(QK/256))
// sparsey_select:      one block per query b; thread t handles CMs t, t+blockDim, ...
//   V_i   = (u_i / n_b)^lambda_u * hd_i          (hd: precomputed H^lH * D^lD factor, or 1)
//   G     = mean_q max_{i in CM q} V_i          (block reduction in shared memory)
//   r == nullptr : winner = first argmax V (retrieval)
//   else         : eta = 1 + max(0,(G-g_minus)/(1-g_minus))^gamma * chi * K
//                  mu_i = max(eta * sigmoid(s (V_i - c)), 1)
//                  winner = #{k : cumsum(mu)_k <= r_bq * sum(mu)}   (same rule as csa.draw)
// n_b == 0 (gated out) gives code -1 and G = 0.

extern "C" __global__ void sparsey_packed_sums(const unsigned long long* __restrict__ xp,
                                               const unsigned long long* __restrict__ wp,
                                               int B, int QK, int nw, float* __restrict__ u) {
    const int b = blockIdx.x;
    const int i = blockIdx.y * blockDim.x + threadIdx.x;
    if (b >= B || i >= QK) return;
    const unsigned long long* x = xp + (long long)b * nw;
    const unsigned long long* w = wp + (long long)i * nw;
    int acc = 0;
    for (int k = 0; k < nw; ++k) acc += __popcll(x[k] & w[k]);
    u[(long long)b * QK + i] = (float)acc;
}

__device__ __forceinline__ float v_of(const float* u, const float* hd, float n, float lam_u, long long idx) {
    float U = u[idx] / n;
    float V = lam_u == 1.0f ? U : powf(U, lam_u);
    return hd ? V * hd[idx] : V;
}

extern "C" __global__ void sparsey_select(const float* __restrict__ u, const float* __restrict__ n_active,
                                          const float* __restrict__ hd, const double* __restrict__ r,
                                          int B, int Q, int K, float lam_u, float g_minus, float gamma,
                                          float chi, float s, float c,
                                          long long* __restrict__ codes, float* __restrict__ G_out) {
    extern __shared__ float smem[];            // [Q] per-CM maxima, then [blockDim.x] partial sums
    float* cmmax = smem;
    float* part = smem + Q;
    const int b = blockIdx.x;
    if (b >= B) return;
    const float n = n_active[b];
    const long long base = (long long)b * Q * K;
    if (n <= 0.0f) {
        for (int q = threadIdx.x; q < Q; q += blockDim.x) codes[(long long)b * Q + q] = -1;
        if (threadIdx.x == 0) G_out[b] = 0.0f;
        return;
    }
    float local = 0.0f;
    for (int q = threadIdx.x; q < Q; q += blockDim.x) {
        float m = v_of(u, hd, n, lam_u, base + (long long)q * K);
        int best = 0;
        for (int k = 1; k < K; ++k) {
            float v = v_of(u, hd, n, lam_u, base + (long long)q * K + k);
            if (v > m) { m = v; best = k; }
        }
        cmmax[q] = m;
        local += m;
        if (r == nullptr) codes[(long long)b * Q + q] = best;
    }
    part[threadIdx.x] = local;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
        if (threadIdx.x < stride) part[threadIdx.x] += part[threadIdx.x + stride];
        __syncthreads();
    }
    const float G = part[0] / (float)Q;
    if (threadIdx.x == 0) G_out[b] = G;
    if (r == nullptr) return;
    float z = (G - g_minus) / (1.0f - g_minus);
    z = z > 0.0f ? z : 0.0f;
    const float eta = 1.0f + powf(z, gamma) * chi * (float)K;
    for (int q = threadIdx.x; q < Q; q += blockDim.x) {
        double total = 0.0;
        for (int k = 0; k < K; ++k) {
            float v = v_of(u, hd, n, lam_u, base + (long long)q * K + k);
            float m = eta / (1.0f + expf(-s * (v - c)));
            total += m < 1.0f ? 1.0 : (double)m;
        }
        const double thr = r[(long long)b * Q + q] * total;
        double acc = 0.0;
        int w = 0;
        for (int k = 0; k < K; ++k) {
            float v = v_of(u, hd, n, lam_u, base + (long long)q * K + k);
            float m = eta / (1.0f + expf(-s * (v - c)));
            acc += m < 1.0f ? 1.0 : (double)m;
            w += acc <= thr;
        }
        codes[(long long)b * Q + q] = w < K ? w : K - 1;
    }
}
