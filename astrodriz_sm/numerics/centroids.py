"""Source positions free of pixel-phase bias, for the a posteriori fit.

drizzlepac 3.11 measures the positions of the sources it aligns with ``DAOStarFinder``
(``astrometric_utils.extract_sources``, ``centering_mode="starfind"``): a one-step fit of a
*sampled* Gaussian to the marginal sums of a cutout. On an undersampled PSF (sigma about one
pixel) that estimate depends on where the star falls within its pixel: it is pushed away from
the centre of the brightest pixel by up to ~0.04 px near the pixel edges. Catalogs of
dithered exposures then disagree by a few hundredths of a pixel, and so do the fits.

:func:`refine_positions` replaces only the x/y of such a catalog by a least-squares fit of a
*pixel-integrated* circular Gaussian (the flux of a Gaussian over each pixel's area) plus a
constant sky to a small cutout around each source. The model is what the detector records,
so the fit has no phase bias whatever the sampling. Rows, their order and every other
column are left as they are; a source whose fit fails keeps its position and is flagged.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.special import erf

__all__ = [
    "FLAG_DIVERGED",
    "FLAG_EDGE",
    "FLAG_FAILED",
    "FLAG_OK",
    "estimate_sigma",
    "refine_positions",
]

FLAG_OK = 0        # refined
FLAG_EDGE = 1      # too few usable pixels in the cutout (image edge, masked pixels)
FLAG_FAILED = 2    # the fit did not converge to a finite solution with positive flux
FLAG_DIVERGED = 4  # the fitted position moved further than ``max_shift``

_SQRT2 = np.sqrt(2.0)
_INV_SQRT2PI = 1.0 / np.sqrt(2.0 * np.pi)


def _profile(center: np.ndarray, sigma: np.ndarray, n: int):
    """Pixel fractions of a unit 1-D Gaussian and their derivatives, for pixels ``0..n-1``.

    Pixel ``i`` spans ``i - 0.5 .. i + 0.5``; ``center`` and ``sigma`` have shape (N,).

    Returns
    -------
    p, dp_dc, dp_ds : ndarray, shape (N, n)
        The fractions, their derivative with respect to the centre and to sigma.
    """
    edges = np.arange(n + 1) - 0.5
    u = (edges[None, :] - center[:, None]) / sigma[:, None]
    cdf = 0.5 * (1.0 + erf(u / _SQRT2))
    pdf = _INV_SQRT2PI * np.exp(-0.5 * u * u)
    p = np.diff(cdf, axis=1)
    dp_dc = -np.diff(pdf, axis=1) / sigma[:, None]
    dp_ds = -np.diff(pdf * u, axis=1) / sigma[:, None]
    return p, dp_dc, dp_ds


def _model(params: np.ndarray, box: int, fit_sigma: bool, sigma: np.ndarray):
    """Model cutouts and their Jacobian.

    ``params`` rows are (x, y, flux, sky[, sigma]) with x, y in cutout pixels.

    Returns
    -------
    model : ndarray, shape (N, box*box)
    jac : ndarray, shape (N, box*box, n_params)
    """
    x, y, flux, sky = params[:, 0], params[:, 1], params[:, 2], params[:, 3]
    s = params[:, 4] if fit_sigma else sigma
    px, dpx, spx = _profile(x, s, box)
    py, dpy, spy = _profile(y, s, box)
    n = len(params)
    psf = (py[:, :, None] * px[:, None, :]).reshape(n, -1)
    cols = [flux[:, None] * (py[:, :, None] * dpx[:, None, :]).reshape(n, -1),
            flux[:, None] * (dpy[:, :, None] * px[:, None, :]).reshape(n, -1),
            psf, np.ones_like(psf)]
    if fit_sigma:
        cols.append(flux[:, None] * (spy[:, :, None] * px[:, None, :]
                                     + py[:, :, None] * spx[:, None, :]).reshape(n, -1))
    return flux[:, None] * psf + sky[:, None], np.stack(cols, axis=-1)


def _cutouts(image: np.ndarray, error, mask, x: np.ndarray, y: np.ndarray, box: int):
    """Cutouts of ``box`` x ``box`` pixels around the pixels nearest ``x``, ``y``, and their weights.

    Pixels off the image, masked, or not finite get weight zero, so sources at the edge are
    fitted on what they have.

    Returns
    -------
    data, weight : ndarray, shape (N, box*box)
    x0, y0 : ndarray of int, shape (N,)
        Image coordinates of each cutout's pixel (0, 0).
    """
    half = box // 2
    ny, nx = image.shape
    x0 = np.floor(x + 0.5).astype(int) - half
    y0 = np.floor(y + 0.5).astype(int) - half
    offsets = np.arange(box)
    rows = y0[:, None, None] + offsets[None, :, None]
    cols = x0[:, None, None] + offsets[None, None, :]
    inside = (rows >= 0) & (rows < ny) & (cols >= 0) & (cols < nx)
    r, c = np.clip(rows, 0, ny - 1), np.clip(cols, 0, nx - 1)
    data = np.asarray(image, dtype=np.float64)[r, c]
    good = inside & np.isfinite(data)
    if mask is not None:
        good &= ~np.asarray(mask, dtype=bool)[r, c]
    if error is None:
        weight = good.astype(np.float64)
    else:
        err = np.asarray(error, dtype=np.float64)[r, c]
        good &= np.isfinite(err) & (err > 0)
        weight = np.where(good, 1.0 / np.where(good, err, 1.0) ** 2, 0.0)
    data = np.where(good, data, 0.0)
    n = len(x)
    return data.reshape(n, -1), weight.reshape(n, -1), x0, y0


def _initial(data: np.ndarray, weight: np.ndarray, box: int) -> tuple[np.ndarray, np.ndarray]:
    """Starting sky (median of the cutout's usable border pixels) and flux (sum above it)."""
    frame = np.zeros((box, box), dtype=bool)
    frame[0, :] = frame[-1, :] = frame[:, 0] = frame[:, -1] = True
    border = np.where(frame.ravel()[None, :] & (weight > 0), data, np.nan)
    with warnings.catch_warnings():
        # A cutout with no usable border pixel has no sky estimate: 0, and it is flagged.
        warnings.simplefilter("ignore", RuntimeWarning)
        sky = np.nanmedian(border, axis=1)
    sky = np.where(np.isfinite(sky), sky, 0.0)
    flux = np.sum(np.where(weight > 0, data - sky[:, None], 0.0), axis=1)
    return sky, np.maximum(flux, 1e-3 * np.abs(sky) + 1e-6)


def _levenberg_marquardt(data, weight, params, box, fit_sigma, sigma, maxiter, tol):
    """Damped Gauss-Newton on all cutouts at once; every source keeps its own damping.

    Returns
    -------
    params : ndarray
    converged : ndarray of bool
    """
    n, k = params.shape
    lam = np.full(n, 1e-3)
    model, jac = _model(params, box, fit_sigma, sigma)
    chi2 = np.sum(weight * (data - model) ** 2, axis=1)
    converged = np.zeros(n, dtype=bool)
    eye = np.eye(k)
    for _ in range(maxiter):
        active = ~converged
        if not active.any():
            break
        wj = jac[active] * weight[active, :, None]
        hess = np.einsum("npi,npj->nij", wj, jac[active])
        grad = np.einsum("npi,np->ni", wj, data[active] - model[active])
        damped = hess + lam[active, None, None] * hess * eye
        # A singular system (no usable pixels) stays put; it is flagged by the caller.
        damped += 1e-12 * eye
        try:
            step = np.linalg.solve(damped, grad[..., None])[..., 0]
        except np.linalg.LinAlgError:
            step = np.zeros_like(grad)
            for j in range(len(grad)):
                try:
                    step[j] = np.linalg.solve(damped[j], grad[j])
                except np.linalg.LinAlgError:
                    step[j] = 0.0
        # Keep each step inside the cutout's pixel scale, as a trust region.
        step[:, :2] = np.clip(step[:, :2], -0.5, 0.5)
        trial = params[active] + step
        if fit_sigma:
            trial[:, 4] = np.clip(trial[:, 4], 0.2, box / 2.0)
        t_model, t_jac = _model(trial, box, fit_sigma, sigma[active] if not fit_sigma else sigma)
        t_chi2 = np.sum(weight[active] * (data[active] - t_model) ** 2, axis=1)
        better = np.isfinite(t_chi2) & (t_chi2 <= chi2[active])
        idx = np.flatnonzero(active)
        take = idx[better]
        params[take] = trial[better]
        model[take] = t_model[better]
        jac[take] = t_jac[better]
        chi2[take] = t_chi2[better]
        lam[take] *= 0.3
        lam[idx[~better]] *= 10.0
        small = np.max(np.abs(step[:, :2]), axis=1) < tol
        converged[idx[better & small]] = True
        # A source whose damping has grown without bound is at its minimum to machine precision.
        converged[idx[~better & (lam[idx] > 1e8)]] = True
    return params, converged


def _fit(image, x, y, sigma, error, mask, box, maxiter, tol, fit_sigma):
    """Fit all sources; see :func:`refine_positions`.

    Returns
    -------
    x, y : ndarray
        Fitted image coordinates.
    params : ndarray
        Fitted (x, y, flux, sky[, sigma]) in cutout coordinates.
    usable : ndarray of bool
        Enough unmasked pixels around the source.
    ok : ndarray of bool
        Converged to a finite solution with positive flux.
    """
    data, weight, x0, y0 = _cutouts(image, error, mask, x, y, box)
    # Half of the cutout is plenty to fix four parameters; a masked (saturated) core is
    # allowed, as the wings alone still give an unbiased position.
    usable = np.count_nonzero(weight > 0, axis=1) >= (box * box + 1) // 2
    sky, flux = _initial(data, weight, box)
    cols = [x - x0, y - y0, flux, sky]
    sig = np.broadcast_to(np.asarray(sigma, dtype=np.float64), x.shape).copy()
    if fit_sigma:
        cols.append(sig)
    params = np.column_stack(cols).astype(np.float64)
    params, converged = _levenberg_marquardt(data, weight, params, box, fit_sigma, sig, maxiter, tol)
    ok = converged & np.all(np.isfinite(params), axis=1) & (params[:, 2] > 0)
    return params[:, 0] + x0, params[:, 1] + y0, params, usable, ok


def _check_inputs(image, box):
    """The image as an array, once it and the cutout size are known to be usable."""
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"image must be 2-D, not {image.ndim}-D")
    if box < 5 or box % 2 == 0:
        raise ValueError(f"box must be an odd number of pixels >= 5, not {box}")
    return image


def refine_positions(image, catalog, sigma=None, *, error=None, mask=None, box: int | None = None,
                     max_shift: float = 1.0, maxiter: int = 30, tol: float = 1e-4,
                     xname: str = "xcentroid", yname: str = "ycentroid",
                     flag_name: str = "centroid_flag"):
    """Replace the x/y of a source catalog by fits of a pixel-integrated Gaussian.

    For each row of ``catalog`` a ``box`` x ``box`` cutout centred on the pixel nearest the
    catalog position is fitted by weighted least squares (Levenberg-Marquardt, all cutouts
    at once) with

    .. math::

        m_{ij} = F\\,P_i(y_0)\\,P_j(x_0) + B, \\qquad
        P_j(x_0) = \\Phi\\!\\left(\\frac{j + 1/2 - x_0}{\\sigma}\\right)
                 - \\Phi\\!\\left(\\frac{j - 1/2 - x_0}{\\sigma}\\right),

    the flux of a circular Gaussian of width ``sigma`` integrated over each pixel (pixel
    ``j`` spans ``j - 1/2 .. j + 1/2``) plus a constant sky ``B``; :math:`x_0, y_0, F, B`
    are free and ``sigma`` is fixed. Because the model integrates over the pixels as the
    detector does, the fitted position has no pixel-phase bias, even when ``sigma`` is
    about one pixel; a centroid, a sampled-Gaussian fit or DAOFIND's marginal fit do not
    have that property on undersampled data.

    Parameters
    ----------
    image : ndarray
        2-D science array the catalog was measured on, sky included (the sky is fitted).
    catalog : astropy.table.Table
        Source catalog, e.g. a chip's table from drizzlepac's ``extract_sources``, with
        0-based pixel positions in columns ``xname`` and ``yname``.
    sigma : float or None, optional
        Gaussian sigma of the PSF in pixels, before pixel integration. None: measured from
        the image with :func:`estimate_sigma`.
    error : ndarray or None, optional
        1-sigma uncertainty of each pixel (an ERR extension): weights ``1 / error**2``.
        None: uniform weights.
    mask : ndarray of bool or None, optional
        True for pixels to leave out of the fits (bad or saturated pixels).
    box : int or None, optional
        Side of the fitted cutouts in pixels (odd, at least 5). None: the odd size reaching
        3 sigma (rounded to pixels) from the centre pixel, at least 7 (7 for sigma = 1 px, 13 for 2 px), which
        holds the star's signal with little room for neighbours.
    max_shift : float, optional
        A fit that moves a source further than this (pixels, in x or y) is rejected: it
        found a neighbour or a cosmic ray, not the source.
    maxiter : int, optional
        Iterations of the fit at most.
    tol : float, optional
        Convergence: the last position step below this, in pixels.
    xname, yname : str, optional
        Position columns.
    flag_name : str, optional
        Column added (or overwritten) with the outcome per source: `FLAG_OK` (0, refined),
        else a sum of `FLAG_EDGE` (1, too few usable pixels), `FLAG_FAILED` (2, no
        converged finite fit with positive flux), `FLAG_DIVERGED` (4, moved more than ``max_shift``).

    Returns
    -------
    astropy.table.Table
        A copy of ``catalog`` with the same rows in the same order and the same columns,
        ``xname`` and ``yname`` holding the fitted positions where the flag is 0 and the
        original ones elsewhere, plus the flag column.
    """
    image = np.asarray(image)
    out = catalog.copy(copy_data=True)
    n = len(out)
    flags = np.zeros(n, dtype=np.int16)
    if n == 0:
        out[flag_name] = flags
        return out
    x = np.asarray(out[xname], dtype=np.float64)
    y = np.asarray(out[yname], dtype=np.float64)
    finite = np.isfinite(x) & np.isfinite(y)
    flags[~finite] |= FLAG_FAILED
    if finite.any():
        if sigma is None:
            sigma = estimate_sigma(image, out[finite], error=error, mask=mask,
                                   box=9 if box is None else box, xname=xname, yname=yname)
        if not (np.isfinite(sigma) and sigma > 0):
            raise ValueError(f"sigma must be a positive number of pixels, not {sigma}")
        if box is None:
            box = max(7, 2 * int(np.round(3.0 * sigma)) + 1)
        image = _check_inputs(image, box)
        fx, fy, _, usable, ok = _fit(image, x[finite], y[finite], float(sigma), error, mask,
                                     box, maxiter, tol, fit_sigma=False)
        sub = np.zeros(int(finite.sum()), dtype=np.int16)
        sub[~usable] |= FLAG_EDGE
        sub[~ok] |= FLAG_FAILED
        with np.errstate(invalid="ignore"):
            far = (np.abs(fx - x[finite]) > max_shift) | (np.abs(fy - y[finite]) > max_shift)
        sub[ok & far] |= FLAG_DIVERGED
        flags[finite] = sub
        good = np.zeros(n, dtype=bool)
        good[finite] = sub == FLAG_OK
        x[good] = fx[sub == FLAG_OK]
        y[good] = fy[sub == FLAG_OK]
    out[xname] = x.astype(np.asarray(catalog[xname]).dtype, copy=False)
    out[yname] = y.astype(np.asarray(catalog[yname]).dtype, copy=False)
    out[flag_name] = flags
    return out


def estimate_sigma(image, catalog, *, error=None, mask=None, box: int = 9, nbright: int = 30,
                   xname: str = "xcentroid", yname: str = "ycentroid", default: float = 1.0) -> float:
    """Gaussian sigma of the PSF (pixels, before pixel integration), measured on the image.

    The model of :func:`refine_positions` with sigma free is fitted to the ``nbright``
    sources with the highest peak (``peak`` column, else ``flux``, else the first rows)
    whose fit succeeds; the median of their sigmas is returned.

    Parameters
    ----------
    image, catalog, error, mask, xname, yname
        As for :func:`refine_positions`.
    box : int, optional
        Side of the fitted cutouts (odd, at least 5); 9 measures sigma of 0.7-2.5 px.
    nbright : int, optional
        Number of sources measured.
    default : float, optional
        Returned when no source can be fitted.

    Returns
    -------
    float
    """
    image = _check_inputs(image, box)
    x = np.asarray(catalog[xname], dtype=np.float64)
    y = np.asarray(catalog[yname], dtype=np.float64)
    rank = next((np.asarray(catalog[c], dtype=np.float64) for c in ("peak", "flux")
                 if c in catalog.colnames), -np.arange(len(x), dtype=np.float64))
    order = [i for i in np.argsort(-np.nan_to_num(rank, nan=-np.inf))
             if np.isfinite(x[i]) and np.isfinite(y[i])][:nbright]
    if not order:
        return float(default)
    fx, fy, params, usable, ok = _fit(image, x[order], y[order], default, error, mask, box,
                                      60, 1e-5, fit_sigma=True)
    sig = params[:, 4]
    keep = usable & ok & np.isfinite(sig) & (sig > 0.25) & (sig < box / 2.0 - 0.1)
    keep &= (np.abs(fx - x[order]) <= 1.0) & (np.abs(fy - y[order]) <= 1.0)
    return float(np.median(sig[keep])) if keep.any() else float(default)

