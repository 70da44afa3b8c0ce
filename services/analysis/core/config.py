"""Every parameter of the streaming core, with its default and the reason for it.

``docs/method.md`` explains each one for clinicians and researchers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from rekindle.analysis.core.errors import ConfigError
from rekindle.analysis.core.extensions import spec as registered_spec

_PROCESSOR_FIELDS = frozenset(
    {
        "lateness_s",
        "eda_min_us",
        "eda_max_us",
        "eda_max_slope_us_s",
        "eda_lowpass_hz",
        "eda_tonic_hz",
        "scr_min_amplitude_us",
        "scr_max_rise_s",
        "scr_rate_window_s",
        "eda_slope_window_s",
        "eda_lost_after_s",
        "eda_flat_us",
        "flat_window_s",
        "hr_min_bpm",
        "hr_max_bpm",
        "hr_window_s",
        "hr_lost_after_s",
        "rr_min_ms",
        "rr_max_ms",
        "rr_artefact_fraction",
        "rr_reference_beats",
        "rmssd_window_s",
        "rmssd_min_pairs",
        "rr_lost_after_s",
        "ppg_beats",
        "ppg_window_s",
        "ppg_hop_s",
        "ppg_margin_s",
        "ppg_min_quality",
        "motion_std_g",
    }
)


@dataclass(frozen=True, slots=True)
class AnalysisConfig:
    """Parameters of :class:`SessionAnalyzer`. Defaults are documented in ``docs/method.md``."""

    # --- time handling -------------------------------------------------------------------------
    #: Data is processed behind a watermark = latest sample time seen minus this many seconds.
    #: Samples older than the part already processed are counted as late and ignored. The rule
    #: (docs/method.md, section 1): the allowance covers what arrives out of step on the live
    #: path and nothing more, since it is also how late every live output is: one message span
    #: (publishers send <= 1 s per message, at its last sample) + the BLE timestamp skew between
    #: devices (clocks resync beyond 2 s) + one resend of a message the broker lost (publishers
    #: resend after 3 s without progress) = 6 s. Longer repairs wait in the service's reorder
    #: buffer (``--state``), which holds every later message of the publisher run (``n``), so
    #: they never reach the analyzer late.
    lateness_s: float = 6.0

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

    # --- beats from PPG (rekindle/analysis/ppg.py, beside the core) -----------------------------
    #: 1: RR intervals are derived from the device's PPG/BVP (the ``rr_ppg`` stream) and used
    #: while the device's own RR is lost (absent counts as lost); 0: PPG is ignored.
    ppg_beats: float = 1.0
    #: NeuroKit2's PPG peak detection runs on windows of this length (s), one every ``ppg_hop_s``.
    ppg_window_s: float = 8.0
    ppg_hop_s: float = 2.0
    #: A window commits the beats at least this far (s) from its right edge, so each beat is out
    #: ``ppg_margin_s`` to ``ppg_margin_s + ppg_hop_s`` seconds of data time after it.
    ppg_margin_s: float = 1.5
    #: Beats whose pulse correlates less than this with the window's mean pulse are rejected
    #: (template matching, Orphanidou et al. 2015; chosen on the dev set with
    #: benchmarks/ppg_agreement.py).
    ppg_min_quality: float = 0.8

    # --- motion ---------------------------------------------------------------------------------
    #: Standard deviation of the ACC magnitude (g) over one second above which EDA and HR from the
    #: same device are "degraded" by motion.
    motion_std_g: float = 0.1

    # --- detector (services/analysis/core/arousal.py) -------------------------------------------
    #: Inputs are ignored for this long after the first data second: electrode-skin equilibration
    #: and sensor start-up transients (Boucsein 2012; Fowles et al. 1981 let EDA electrodes settle
    #: before recording).
    settle_s: float = 120.0
    #: Tonic EDA (as ln µS) is averaged over this trailing window (s): minutes-long averaging, so
    #: single non-specific SCRs (1-3 per minute at rest, Boucsein 2012) do not read as a rise.
    eda_avg_s: float = 60.0
    #: 1: seconds whose EDA is degraded (motion on the device's accelerometer, step artefacts)
    #: are left out of the EDA average, as wrist EDA under movement is unreliable (pressure and
    #: contact changes; Kleckner et al. 2018); 0: averaged like the others.
    eda_skip_degraded: float = 1.0
    #: HR and ln RMSSD are averaged over this trailing window (s).
    hr_avg_s: float = 30.0
    #: Local reference: each averaged input is compared with its lowest level (ln RMSSD: its
    #: highest) in this trailing window (s), i.e. the rise since the most recent trough. Wrist EDA
    #: drifts up by about ln 2 over 10-15 min in half the people; over 2 min that drift is a small
    #: fraction of a task response, and a level held longer than the window becomes the reference.
    rise_window_s: float = 120.0
    #: EDA reference: 0 = the trough of the window (above); q > 0 = the lower q quantile of the
    #: averaged level over the window ending ``ref_gap_s`` ago (robust to single dips).
    eda_ref_quantile: float = 0.5
    ref_gap_s: float = 30.0
    #: EDA rise that scores 50 index points: relative (ln units; 0.1 = +10.5 %) and absolute (µS).
    #: The EDA part of the index is 50 x min(relative / eda_rise_ln, absolute / eda_rise_min_us),
    #: so both must be reached: relative change makes people with low and high skin conductance
    #: comparable, the absolute floor (the SCR minimum amplitude range, Boucsein 2012) keeps
    #: quantisation and noise at very low levels (< 0.1 µS) from reading as responses.
    eda_rise_ln: float = 0.25
    eda_rise_min_us: float = 0.03
    #: Cardiac rises that score 50 points (with ``cardiac_weight`` 1): HR rise (bpm) above its
    #: trough and ln RMSSD fall below its peak.
    hr_rise_bpm: float = 10.0
    ln_rmssd_fall: float = 0.3
    #: Weights inside the cardiac domain.
    weight_hr: float = 0.7
    weight_rmssd: float = 0.3
    #: Share of the cardiac points added to the index when EDA is measured (support: 0 = EDA
    #: alone). On a device without EDA the cardiac domain is the whole index.
    cardiac_weight: float = 0.0
    #: An episode opens only when the EDA part alone is at least this fraction of its scale
    #: (EDA opens episodes; HR and RMSSD support). 0 lets the cardiac support open alone.
    eda_open_min: float = 0.5

    # --- episodes -------------------------------------------------------------------------------
    #: Arousal episode: index >= enter for ``min_episode_s`` (the confirmation, with the onset set
    #: back to the EDA trough the rise started from); ends after ``exit_hold_s`` below exit.
    enter_index: float = 50.0
    exit_index: float = 30.0
    min_episode_s: float = 30.0
    exit_hold_s: float = 30.0
    #: Release (docs/method.md section 8): judged once the surge has peaked and its episode has
    #: closed (``release_needs_close`` 1; 0: also while its index has fallen to
    #: ``release_falling_fraction`` of its peak), no earlier than ``release_after_peak_s`` after
    #: the index peak; HR at least ``release_hr_drop_bpm`` below the surge's HR (its mean over the
    #: episode; ``release_hr_ref_peak`` 1: its peak), fallen that much within ``release_fall_s``
    #: (0 = any time), tonic EDA not rising (less than ``release_eda_rise_ln`` over the last
    #: ``eda_avg_s``) and, when ``release_eda_fall_ln`` > 0, falling by at least that much (and
    #: with ``release_rmssd_rise_ln`` > 0 ln RMSSD risen, where measured); all
    #: held for ``recovery_hold_s``, within ``release_window_s`` of the episode's close. The
    #: defaults are the design and hold the cross-validation chose (benchmarks/detection_cv.py).
    release_needs_close: float = 1.0
    release_falling_fraction: float = 0.7
    release_after_peak_s: float = 0.0
    release_hr_drop_bpm: float = 5.0
    release_hr_ref_peak: float = 0.0
    release_fall_s: float = 120.0
    release_eda_rise_ln: float = 0.02
    release_eda_fall_ln: float = 0.0
    #: > 0: where ln RMSSD is measured (now and during the surge), it must also be at least this
    #: far above its mean during the surge (a vagal rebound); 0 = off. Wrist RR is lost for much
    #: of a session, so HR alone decides where it is not measured.
    release_rmssd_rise_ln: float = 0.0
    #: A recovery must hold this long (s): HR that stays down, not a dip between two bursts
    #: (on the labelled data 90 s held out: precision 0.78 against 0.41 with 30 s).
    recovery_hold_s: float = 90.0
    release_window_s: float = 600.0

    # --- registered detectors (rekindle/analysis/core/extensions.py) ---------------------------
    #: ``(section name, parameters)`` of the registered detectors whose parameters differ from
    #: their defaults, sorted by name (``--param <section>.<name>=...``); see :meth:`section`.
    sections: tuple[tuple[str, object], ...] = ()

    def section(self, name: str) -> object:
        """The parameters of the registered detector ``name``: those given in ``sections``,
        else its defaults."""
        for section, values in self.sections:
            if section == name:
                return values
        found = registered_spec(name)
        if found is None:
            raise ConfigError(name, "no such detector is registered")
        return found.config

    def __post_init__(self) -> None:
        if not isinstance(self.sections, tuple) or not all(
            isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)
            for item in self.sections
        ):
            raise ConfigError("sections", "must be a tuple of (detector name, parameters) pairs")
        for f in fields(self):
            if f.name == "sections":
                continue
            value = getattr(self, f.name)
            if not isinstance(value, int | float) or not math.isfinite(value):
                raise ConfigError(f.name, f"must be a finite number, got {value!r}")
            if value < 0:
                raise ConfigError(f.name, f"must not be negative, got {value!r}")
        positive = (
            "eda_lowpass_hz",
            "eda_tonic_hz",
            "scr_rate_window_s",
            "eda_slope_window_s",
            "hr_window_s",
            "rmssd_window_s",
            "rr_reference_beats",
            "eda_avg_s",
            "hr_avg_s",
            "rise_window_s",
            "eda_rise_ln",
            "eda_rise_min_us",
            "hr_rise_bpm",
            "ln_rmssd_fall",
            "ppg_window_s",
            "ppg_hop_s",
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
        if self.ppg_min_quality > 1:
            raise ConfigError("ppg_min_quality", "must be within 0..1 (a correlation)")
        if self.ppg_margin_s + self.ppg_hop_s + 1.0 > self.ppg_window_s:
            raise ConfigError(
                "ppg_window_s",
                "must be at least ppg_margin_s + ppg_hop_s + 1 s (the beats' context)",
            )
        if self.ppg_beats > 0 and self.ppg_margin_s + self.ppg_hop_s + 1.0 >= self.lateness_s:
            raise ConfigError(
                "ppg_hop_s",
                "ppg_margin_s + ppg_hop_s + 1 s must stay below lateness_s, or the derived beats "
                "reach the analyzer after their second was closed",
            )
        if self.release_falling_fraction > 1:
            raise ConfigError("release_falling_fraction", "must be within 0..1")
        for name in ("release_needs_close", "release_hr_ref_peak"):
            if getattr(self, name) not in (0, 1):
                raise ConfigError(name, f"must be 0 (off) or 1 (on), got {getattr(self, name)!r}")


#: The parameters of the detector stage (``arousal.py``): everything after the signal processors.
#: Changing only these leaves the per-second inputs unchanged (the cross-validation's cache).
DETECTOR_FIELDS = frozenset(
    f.name for f in fields(AnalysisConfig) if f.name not in _PROCESSOR_FIELDS
)
