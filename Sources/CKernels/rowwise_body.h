/* The kernels of rowwise.c, included once per ISA: CX_ISA_FN(name) names this copy and
 * rowwise.c compiles it with that ISA's target attribute (AVX-512F, AVX2+FMA, baseline).
 * Not a public header. */

/* dst = RMSNorm(src)·w per row, after src += add when add is given (a residual). dst may
 * be src. */
static void CX_ISA_FN(rmsnorm_rows)(float *dst, float *src, const float *add, int rows, int n, const float *w, float eps) {
  /* Explicit 16-lane loops: dst is often src, and the vectoriser's overlap checks send
   * an in-place call down its scalar path. */
  for (int r = 0; r < rows; r++) {
    float *row = src + (size_t)r * n, *out = dst + (size_t)r * n;
    int j = 0;
    if (add != NULL) {
      const float *a = add + (size_t)r * n;
      for (; j + LANES <= n; j += LANES) STORE16(row + j, LOAD16(row + j) + LOAD16(a + j));
      for (; j < n; j++) row[j] += a[j];
    }
    const float inv = 1.0f / sqrtf(dot(row, row, n) / (float)n + eps);
    const v16 iv = SPLAT(inv);
    j = 0;
    if (w != NULL) {
      for (; j + LANES <= n; j += LANES) STORE16(out + j, LOAD16(row + j) * iv * LOAD16(w + j));
      for (; j < n; j++) out[j] = row[j] * inv * w[j];
    } else {
      for (; j + LANES <= n; j += LANES) STORE16(out + j, LOAD16(row + j) * iv);
      for (; j < n; j++) out[j] = row[j] * inv;
    }
  }
}

static void CX_ISA_FN(softmax_rows)(float *p, int rows, int n, int ld, float scale) {
  if (n <= 0) return;
  for (int r = 0; r < rows; r++) {
    float *row = p + (size_t)r * ld;
    /* Max in 16 lanes; NaN never wins a comparison, and a NaN element makes its exp
     * and so the whole row NaN (as torch). */
    v16 mx = SPLAT(-INFINITY);
    int i = 0;
    for (; i + LANES <= n; i += LANES) {
      mx = __builtin_elementwise_max(mx, LOAD16(row + i)); /* maxNum: a NaN lane loses */
    }
    float m = mx[0];
    for (int l = 1; l < LANES; l++) m = mx[l] > m ? mx[l] : m;
    for (; i < n; i++) m = row[i] > m ? row[i] : m;
    /* exp as a plain loop (the vectoriser handles it), then the sum in 16 lanes. */
    for (i = 0; i < n; i++) row[i] = cxk_exp((row[i] - m) * scale);
    v16 acc = {0};
    for (i = 0; i + LANES <= n; i += LANES) acc += LOAD16(row + i);
    float tail = 0.0f;
    for (; i < n; i++) tail += row[i];
    const float inv = 1.0f / (HSUM(acc) + tail);
    const v16 iv = SPLAT(inv);
    for (i = 0; i + LANES <= n; i += LANES) STORE16(row + i, LOAD16(row + i) * iv);
    for (; i < n; i++) row[i] *= inv;
  }
}

static void CX_ISA_FN(silu_mul)(float *g, const float *u, long n) {
  for (long i = 0; i < n; i++) {
    const float x = g[i];
    g[i] = x * (1.0f / (1.0f + cxk_exp(-x))) * u[i];
  }
}

static void CX_ISA_FN(loop_rows)(const loop_job *j, int r0, int r1) {
  const int n = j->n;
  if (j->kind == 3) {
    const size_t o = (size_t)r0 * n;
    CX_ISA_FN(rmsnorm_rows)(j->dst + o, j->h + o, j->o ? j->o + o : NULL, r1 - r0, n, j->w, j->eps);
    return;
  }
  for (int r = r0; r < r1; r++) {
    float *h = j->h + (size_t)r * n;
    const float *e = j->e + (size_t)r * n;
    if (j->kind == 0) {
      float *out = j->dst + (size_t)r * n;
      for (int c = 0; c < n; c++) out[c] = (c < j->l ? h[c] + j->emb[c] : h[c]) + e[c];
      CX_ISA_FN(rmsnorm_rows)(out, out, NULL, 1, n, j->w, j->eps);
    } else if (j->kind == 1) {
      const float *o = j->o + (size_t)r * n;
      for (int c = 0; c < n; c++) h[c] = (j->a[c] * h[c] + j->b[c] * e[c]) + o[c];
    } else {
      float *out = j->dst + (size_t)r * n;
      if (j->coef == NULL) {
        for (int c = 0; c < n; c++) out[c] += h[c];
      } else {
        const float k = j->coef[r];
        for (int c = 0; c < n; c++) out[c] += k * h[c];
      }
    }
  }
}

/* The LSTM cell (gates i, f, g, o) for hidden units j0 ..< j1 (multiples of 16, or H) of
 * one row. `gates` is the row's W_hh h in the recurrence's block order (block u holds
 * i, f, g, o of units 16u ..< 16u + w, w floats each), `xg` the row's input projection
 * in gate-major order (i[H], f[H], g[H], o[H]), plus `bias` in that order when given
 * (xg + bias is the reference's W_ih x + b_ih + b_hh); c is updated, h and y get the new h.
 * reset: h and c were zero before this step (the W_hh h term and c are dropped). */
static void CX_ISA_FN(lstm_cell)(const float *gates, const float *xg, const float *bias, int H, int j0, int j1,
                                 float *c, float *h, float *y, int reset) {
  for (int u0 = j0; u0 < j1; u0 += LANES) {
    const int w = j1 - u0 < LANES ? j1 - u0 : LANES;
    const size_t bytes = (size_t)w * sizeof(float);
    /* Local 16-float copies (zero-padded past w): the arithmetic below then runs as
     * whole vectors, free of aliasing between the caller's buffers. */
    float ri[LANES] = {0}, rf[LANES] = {0}, rg[LANES] = {0}, ro[LANES] = {0}, cp[LANES] = {0};
    float xi[LANES] = {0}, xf[LANES] = {0}, xc[LANES] = {0}, xo[LANES] = {0};
    if (!reset) {
      const float *g = gates + 4 * u0;
      memcpy(ri, g, bytes);
      memcpy(rf, g + w, bytes);
      memcpy(rg, g + 2 * w, bytes);
      memcpy(ro, g + 3 * w, bytes);
      memcpy(cp, c + u0, bytes);
    }
    memcpy(xi, xg + u0, bytes);
    memcpy(xf, xg + H + u0, bytes);
    memcpy(xc, xg + 2 * H + u0, bytes);
    memcpy(xo, xg + 3 * H + u0, bytes);
    if (bias != NULL) {
      float bi[LANES] = {0}, bf[LANES] = {0}, bc[LANES] = {0}, bo[LANES] = {0};
      memcpy(bi, bias + u0, bytes);
      memcpy(bf, bias + H + u0, bytes);
      memcpy(bc, bias + 2 * H + u0, bytes);
      memcpy(bo, bias + 3 * H + u0, bytes);
      for (int l = 0; l < LANES; l++) {
        xi[l] += bi[l];
        xf[l] += bf[l];
        xc[l] += bc[l];
        xo[l] += bo[l];
      }
    }
    float cn[LANES], hn[LANES];
    for (int l = 0; l < LANES; l++) {
      const float i = 1.0f / (1.0f + cxk_exp(-(ri[l] + xi[l]))), f = 1.0f / (1.0f + cxk_exp(-(rf[l] + xf[l])));
      const float o = 1.0f / (1.0f + cxk_exp(-(ro[l] + xo[l])));
      cn[l] = f * cp[l] + i * cxk_tanh(rg[l] + xc[l]);
      hn[l] = o * cxk_tanh(cn[l]);
    }
    memcpy(c + u0, cn, bytes);
    memcpy(h + u0, hn, bytes);
    memcpy(y + u0, hn, bytes);
  }
}
