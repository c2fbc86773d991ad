/* Sequential Code Selection + single-trial learning for one Sparsey macrocolumn (CPU fast path).
 *
 * Same semantics as spiking/memory/learn.py:select_sequence_torch (the reference):
 * query b sees the weights written by queries 0..b-1. Input sums are popcounts of packed
 * weights (bit j%64 of word j//64) ANDed with the packed input, so one query costs
 * QK * n_words AND+POPCNT instead of a dense dot product.
 *
 * params: [lambda_u, lambda_h, lambda_d, g_minus, gamma, chi, s, c]
 */
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <stdlib.h>

static inline int64_t popc(uint64_t v) { return (int64_t)__builtin_popcountll(v); }

static inline double powl1(double x, double lam) { return lam == 1.0 ? x : pow(x, lam); }

static int64_t sums(const uint64_t *w, const uint64_t *xp, int nw, int i) {
    const uint64_t *row = w + (int64_t)i * nw;
    int64_t acc = 0;
    for (int k = 0; k < nw; ++k) acc += popc(row[k] & xp[k]);
    return acc;
}

static int64_t write_row(uint64_t *w, const uint64_t *xp, int nw, int i) {
    uint64_t *row = w + (int64_t)i * nw;
    int64_t added = 0;
    for (int k = 0; k < nw; ++k) {
        added += popc(xp[k] & ~row[k]);
        row[k] |= xp[k];
    }
    return added;
}

/* returns 0 on success */
int sparsey_select_sequence(
    int B, int Q, int K,
    int nwu, const uint64_t *xp, const int64_t *nx, uint64_t *wu,
    int use_h, uint64_t *wh, const int64_t *prev0,          /* prev0: [Q] code before query 0, or NULL */
    int nwd, const uint64_t *dp, const int64_t *nd, uint64_t *wd,  /* nwd == 0: no top-down */
    const uint8_t *ok, const double *params, const double *r, /* r: [B,Q] uniforms or NULL (argmax) */
    int learn, int64_t n_set, int64_t cap,
    int64_t *codes, double *G_out, uint8_t *written, int64_t *n_set_out)
{
    const int QK = Q * K;
    const int nwh = (QK + 63) / 64;
    const double lu = params[0], lh = params[1], ld = params[2], gm = params[3], gam = params[4],
                 chi = params[5], s = params[6], c = params[7];
    double *V = (double *)malloc(sizeof(double) * QK);
    double *cdf = (double *)malloc(sizeof(double) * K);
    uint64_t *pbits = (uint64_t *)calloc((size_t)nwh, sizeof(uint64_t));
    int64_t *prev = (int64_t *)malloc(sizeof(int64_t) * Q);
    if (!V || !cdf || !pbits || !prev) { free(V); free(cdf); free(pbits); free(prev); return 1; }
    int have_prev = 0;
    if (use_h && prev0) { memcpy(prev, prev0, sizeof(int64_t) * Q); have_prev = 1; }

    for (int b = 0; b < B; ++b) {
        int64_t *code = codes + (int64_t)b * Q;
        written[b] = 0;
        if (!ok[b]) {
            for (int q = 0; q < Q; ++q) code[q] = -1;
            G_out[b] = 0.0;
            have_prev = 0;
            continue;
        }
        const uint64_t *x = xp + (int64_t)b * nwu;
        const int hp = use_h && have_prev;
        if (hp) {
            memset(pbits, 0, sizeof(uint64_t) * nwh);
            for (int q = 0; q < Q; ++q) { int64_t u = q * K + prev[q]; pbits[u >> 6] |= 1ULL << (u & 63); }
        }
        const int dd = nwd > 0 && nd[b] > 0;
        const uint64_t *d = dd ? dp + (int64_t)b * nwd : NULL;
        double Gsum = 0.0;
        for (int i = 0; i < QK; ++i) {
            double v = powl1((double)sums(wu, x, nwu, i) / (double)nx[b], lu);
            if (hp) v *= powl1((double)sums(wh, pbits, nwh, i) / (double)Q, lh);
            if (dd) v *= powl1((double)sums(wd, d, nwd, i) / (double)nd[b], ld);
            V[i] = v;
        }
        for (int q = 0; q < Q; ++q) {
            double m = V[q * K];
            for (int k = 1; k < K; ++k) if (V[q * K + k] > m) m = V[q * K + k];
            Gsum += m;
        }
        const double G = Gsum / Q;
        G_out[b] = G;
        if (!r) {
            for (int q = 0; q < Q; ++q) {
                int best = 0;
                for (int k = 1; k < K; ++k) if (V[q * K + k] > V[q * K + best]) best = k;
                code[q] = best;
            }
        } else {
            double z = (G - gm) / (1.0 - gm);
            if (z < 0) z = 0;
            const double eta = 1.0 + pow(z, gam) * chi * K;
            for (int q = 0; q < Q; ++q) {
                double acc = 0.0;
                for (int k = 0; k < K; ++k) {
                    double m = eta / (1.0 + exp(-s * (V[q * K + k] - c)));
                    acc += m < 1.0 ? 1.0 : m;
                    cdf[k] = acc;
                }
                const double thr = r[(int64_t)b * Q + q] * acc;
                int w = 0;
                for (int k = 0; k < K; ++k) w += cdf[k] <= thr;
                code[q] = w < K ? w : K - 1;
            }
        }
        if (learn && (cap < 0 || n_set < cap)) {
            for (int q = 0; q < Q; ++q) {
                const int i = q * K + (int)code[q];
                n_set += write_row(wu, x, nwu, i);
                if (hp) write_row(wh, pbits, nwh, i);
                if (dd) write_row(wd, d, nwd, i);
            }
            written[b] = 1;
        }
        if (use_h) { memcpy(prev, code, sizeof(int64_t) * Q); have_prev = 1; }
    }
    *n_set_out = n_set;
    free(V); free(cdf); free(pbits); free(prev);
    return 0;
}

/* out[a, b] = popcount(A_a AND B_b): code overlaps of packed one-hot codes (or packed input sums). */
void sparsey_and_popcount(int na, int nb, int nw, const uint64_t *A, const uint64_t *Bm, int32_t *out)
{
    for (int a = 0; a < na; ++a) {
        const uint64_t *ra = A + (int64_t)a * nw;
        int32_t *o = out + (int64_t)a * nb;
        for (int b = 0; b < nb; ++b) {
            const uint64_t *rb = Bm + (int64_t)b * nw;
            int64_t acc = 0;
            for (int k = 0; k < nw; ++k) acc += popc(ra[k] & rb[k]);
            o[b] = (int32_t)acc;
        }
    }
}

/* Validate and bit-pack B rows of n inputs (kind 0: bytes, i.e. uint8/bool; kind 1: float32):
 * out[b, j/64] bit j%64 = (x_bj != 0), nx[b] = |x_b|. Returns the first row holding a value other
 * than 0 or 1, or -1 when every value is binary (one pass over x, no temporaries). */
int64_t sparsey_pack_validate(int64_t B, int n, int nw, const void *x, int kind, uint64_t *out, int64_t *nx)
{
    int64_t bad = -1;
    for (int64_t b = 0; b < B; ++b) {
        uint64_t *o = out + b * nw;
        int64_t cnt = 0;
        int nonbin = 0;
        for (int k = 0; k < nw; ++k) {
            const int j0 = k * 64, j1 = j0 + 64 < n ? j0 + 64 : n;
            uint64_t w = 0;
            if (kind == 0) {
                const uint8_t *r = (const uint8_t *)x + b * n;
                for (int j = j0; j < j1; ++j) { nonbin |= r[j] > 1; w |= (uint64_t)(r[j] != 0) << (j - j0); }
            } else {
                const float *r = (const float *)x + b * n;
                for (int j = j0; j < j1; ++j) {
                    const float v = r[j];
                    nonbin |= (v != 0.0f) & (v != 1.0f);
                    w |= (uint64_t)(v != 0.0f) << (j - j0);
                }
            }
            o[k] = w;
            cnt += popc(w);
        }
        nx[b] = cnt;
        if (nonbin && bad < 0) bad = b;
    }
    return bad;
}
