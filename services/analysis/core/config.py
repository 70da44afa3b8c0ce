"""Every parameter of the streaming core, with its default and the reason for it.

``docs/method.md`` explains each one for clinicians and researchers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from services.analysis.core.errors import ConfigError


@dataclass(frozen=True, slots=True)
class AnalysisConfig:
    """Parameters of :class:`SessionAnalyzer`. Defaults are documented in ``docs/method.md``."""

    # --- time handling -------------------------------------------------------------------------
    #: Data is processed behind a watermark = latest sample time seen minus this many seconds.
    #: Samples older than the part already processed are counted as late and ignored.
    lateness_s: float = 10.0

    # --- EDA ------------------------------------------------------------------------------------
    #: Plausible EDA range (µS); outside is "no contact"/"out of range" (Kleckner et al. 2018).
    eda_min_us: float = 0.05
    eda_max_us: float = 60.0
    #: Largest plausible EDA change (µS/s); faster is a step artefact (Kleckner et al. 2018).
    eda_max_slope_us_s: float = 10.0
    #: Corner of the causal 2-pole low-pass that cleans raw EDA (Hz). SCRs carry < 1 Hz.
    eda_lowpass_hz: float = 1.0
    #: Corner of the causal tonic low-pass (Hz); phasic = cleaned - tonic. 0.05 Hz is the
    #: AcqKnowledge / NeuroKit2 ``highpass`` decomposition cut-off.
    eda_tonic_hz: float = 0.05
    #: Smallest onset-to-peak rise counted as an SCR (µS). Boucsein (2012) lists 0.01-0.05 µS;
    #: 0.03 µS is mid-range: ~20x the E4's 0.0013 µS resolution and above 4-Hz wrist noise,
    #: yet below typical wrist responses.
    scr_min_amplitude_us: float = 0.03
    #: Longest onset-to-peak rise time of one SCR (s); longer rises are tonic drift (Boucsein 2012).
    scr_max_rise_s: float = 5.0
    #: SCR rate is counted over this trailing window (s) and reported per minute.
    scr_rate_window_s: float = 60.0
    #: Tonic slope is the change over this trailing window (s), reported per minute.
    eda_slope_window_s: float = 60.0
    #: Seconds without a valid EDA sample before EDA is "lost".
    eda_lost_after_s: float = 5.0
    #: A flat line (peak-to-peak below this, µS, over ``flat_window_s``) means no skin contact.
    eda_flat_us: float = 0.0005
    flat_window_s: float = 30.0

    # --- cardiac --------------------------------------------------------------------------------
    hr_min_bpm: float = 30.0
    hr_max_bpm: float = 220.0
    #: HR is averaged over this trailing window (s).
    hr_window_s: float = 5.0
    hr_lost_after_s: float = 5.0
    rr_min_ms: float = 300.0
    rr_max_ms: float = 2000.0
    #: An interval deviating from the median of the previous accepted intervals by more than
    #: this fraction is an artefact candidate (20 %: Malik et al. 1989; Lipponen & Tarvainen 2019
    #: use adaptive limits of similar size).
    rr_artefact_fraction: float = 0.2
    #: Number of previous accepted intervals whose median is the reference.
    rr_reference_beats: int = 9
    #: RMSSD window (s) and the fewest successive differences it needs (Task Force 1996 defines
    #: 5-min RMSSD; 60-s ultra-short RMSSD tracks it closely, Munoz et al. 2015).
    rmssd_window_s: float = 60.0
    rmssd_min_pairs: int = 20
    #: Seconds without an accepted RR interval before RR is "lost".
    rr_lost_after_s: float = 10.0

    # --- motion ---------------------------------------------------------------------------------
    #: Standard deviation of the ACC magnitude (g) over one second above which EDA and HR from the
    #: same device are "degraded" by motion.
    motion_std_g: float = 0.1

    # --- baseline and index ----------------------------------------------------------------------
    #: Automatic baseline: the first this many valid seconds of each input, after ignoring its
    #: first ``settle_s`` seconds (electrode-skin equilibration and sensor start-up transients;
    #: Boucsein 2012 and Fowles et al. 1981 recommend letting EDA electrodes settle first).
    baseline_s: float = 300.0
    settle_s: float = 120.0
    #: A provisional index is shown once this much baseline is in; episodes wait for the full one.
    baseline_min_s: float = 60.0
    #: Habituation / drift: once the baseline is final, an input's reference level follows the
    #: ``adapt_quantile`` of its last ``adapt_window_s`` seconds when that is further towards
    #: arousal than the baseline median (0 disables). A plateau held for ~10 min becomes the new
    #: reference, so slow electrode/skin drift and sustained states do not read as endless
    #: arousal; falling back below it returns the reference to the baseline.
    adapt_window_s: float = 600.0
    adapt_quantile: float = 0.25
    #: Aroused baseline: once the baseline is final, when the median of the last
    #: ``adapt_window_s`` lies below the baseline median (towards calm), that median becomes the
    #: reference (1, default; 0 disables). A session that starts aroused (anxious arrival,
    #: electrodes still equilibrating) otherwise reads every later, calmer state as "below
    #: baseline" and misses the responses that follow.
    adapt_down: float = 1.0
    #: Index points per robust standard deviation above baseline (4 SD -> 100).
    points_per_sd: float = 25.0
    #: Cap on one input's robust z-score, so one extreme input cannot saturate the index alone.
    z_cap: float = 6.0
    #: Smallest robust scales (floors for 1.4826*MAD), so a flat baseline does not explode z.
    #: SCR rate: 2 /min, because the resting rate of non-specific SCRs itself varies between about
    #: 1 and 3 per minute (Boucsein 2012; Dawson et al. 2007) and a count over 60 s is Poisson-like
    #: (SD = sqrt(rate)); with 1 /min, three spontaneous SCRs in one calm minute read as 2 SD.
    tonic_scale_floor_us: float = 0.02
    tonic_scale_floor_fraction: float = 0.05
    scr_rate_scale_floor: float = 2.0
    hr_scale_floor_bpm: float = 2.0
    ln_rmssd_scale_floor: float = 0.1
    #: Weights inside each domain (EDA: tonic level vs SCR rate; cardiac: HR vs RMSSD).
    weight_tonic: float = 0.5
    weight_scr_rate: float = 0.5
    weight_hr: float = 0.7
    weight_rmssd: float = 0.3
    #: Combining the domains when both are present. EDA is the most specific autonomic marker of
    #: sympathetic arousal (purely sympathetic innervation: Boucsein 2012; Dawson et al. 2007);
    #: heart rate is dually innervated and moved by posture, movement, talking and breathing.
    #: With ``eda_alone`` (1, the default) the index is ``points_per_sd`` x max(EDA, mean of the
    #: two domains): measuring the heart never dilutes a clear EDA response (which then reads as
    #: it would on an EDA-only device), while heart rate alone still counts half. 0 = the plain
    #: mean of the domains.
    eda_alone: float = 1.0

    # --- episodes -------------------------------------------------------------------------------
    #: Arousal episode: index >= enter for ``min_episode_s``; ends after ``exit_hold_s`` below exit.
    #: 30 s = half the 60-s SCR-rate window the index is built on: a shorter dip is within the
    #: index's own averaging, and a response that dips and resumes is one episode, not two.
    enter_index: float = 50.0
    exit_index: float = 30.0
    min_episode_s: float = 20.0
    exit_hold_s: float = 30.0
    #: Release: after a surge, a signal gives back this fraction of its rise, held this long,
    #: within this window after the arousal episode ends.
    recovery_fraction: float = 0.5
    recovery_hold_s: float = 30.0
    release_window_s: float = 300.0
    #: A signal counts as having surged when its robust z reached at least this.
    surge_min_z: float = 2.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int | float) or not math.isfinite(value):
                raise ConfigError(f.name, f"must be a finite number, got {value!r}")
            if value < 0:
                raise ConfigError(f.name, f"must not be negative, got {value!r}")
        positive = (
            "eda_lowpass_hz", "eda_tonic_hz", "scr_rate_window_s", "eda_slope_window_s",
            "hr_window_s", "rmssd_window_s", "baseline_s", "points_per_sd", "rr_reference_beats",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(name, "must be positive")
        if self.eda_min_us >= self.eda_max_us:
            raise ConfigError("eda_min_us", "must be below eda_max_us")
        if self.hr_min_bpm >= self.hr_max_bpm:
            raise ConfigError("hr_min_bpm", "must be below hr_max_bpm")
        if self.rr_min_ms >= self.rr_max_ms:
            raise ConfigError("rr_min_ms", "must be below rr_max_ms")
        if self.exit_index > self.enter_index:
            raise ConfigError("exit_index", "must not exceed enter_index (hysteresis)")
        if self.baseline_min_s > self.baseline_s:
            raise ConfigError("baseline_min_s", "must not exceed baseline_s")
        if self.adapt_quantile > 1:
            raise ConfigError("adapt_quantile", "must be within 0..1")
        if self.recovery_fraction <= 0:
            raise ConfigError("recovery_fraction", "must be positive")
