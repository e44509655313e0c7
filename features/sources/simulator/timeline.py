"""The simulated calendar: days, seasonality, congestion and the order-intensity clock.

Inside the simulator a time is a float number of days since the start date at 00:00 UTC. The
order intensity of a customer is λ_i × season(t); its integral S(t) (the "seasonal clock")
turns the non-homogeneous Poisson process of orders into a unit-rate one, so waiting times
are drawn as S⁻¹(S(r) + E/λ) with E ~ Exp(1), and the true repurchase probability is a closed
form in S.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np

from features.sources.simulator.params import SeasonalityParams

# Days simulated beyond the horizon so that experiences resolving after the end and waiting
# times crossing it can still be evaluated; anything after the horizon is never written.
PAD_DAYS = 400
SECONDS_PER_DAY = 86_400


@dataclass(frozen=True)
class Timeline:
    """Daily arrays over the simulated period plus `PAD_DAYS` after it.

    Attributes:
        start: First simulated day.
        days: Number of simulated days (the horizon is `days` days after `start`).
        epoch_s: Start as seconds since 1970-01-01 UTC.
        season: Daily order-intensity factor (mean 1 over the simulated days).
        base: The same without the weekday rhythm (yearly shape only).
        congestion: Network congestion per day: trailing mean of demand above normal.
        weekday: Weekday per day, Monday = 0.
        cum_season: S at each midnight; length len(season) + 1, starts at 0.
        hourly: Share of a day's intensity in each UTC hour (sums to 1).
        cum_hourly: Cumulative `hourly`, length 25, from 0 to 1.
        month_starts: Day offsets of the first day of each simulated month.
        black_friday: Day offsets of each Black Friday in the padded range.
    """

    start: date
    days: int
    epoch_s: int
    season: np.ndarray
    base: np.ndarray
    congestion: np.ndarray
    weekday: np.ndarray
    cum_season: np.ndarray
    hourly: np.ndarray
    cum_hourly: np.ndarray
    month_starts: np.ndarray
    black_friday: np.ndarray

    def season_clock(self, t: np.ndarray) -> np.ndarray:
        """S(t): integrated order intensity from the start to `t` (days), intraday exact."""
        t = np.asarray(t, dtype=np.float64)
        day = np.clip(np.floor(t), 0, len(self.season) - 1).astype(np.int64)
        hour = np.clip((t - day) * 24.0, 0.0, 24.0)
        h = np.minimum(hour.astype(np.int64), 23)
        within = self.cum_hourly[h] + (hour - h) * self.hourly[h]
        return self.cum_season[day] + self.season[day] * within

    def season_clock_inverse(self, s: np.ndarray) -> np.ndarray:
        """S⁻¹(s): the time whose seasonal clock reads `s`; inf beyond the padded range."""
        s = np.asarray(s, dtype=np.float64)
        last = len(self.season)
        day = np.searchsorted(self.cum_season, s, side="right") - 1
        beyond = day >= last
        day = np.clip(day, 0, last - 1)
        within = np.clip((s - self.cum_season[day]) / self.season[day], 0.0, 1.0)
        h = np.clip(np.searchsorted(self.cum_hourly, within, side="right") - 1, 0, 23)
        hour = h + (within - self.cum_hourly[h]) / self.hourly[h]
        out = day + np.minimum(hour, 24.0 - 1e-9) / 24.0
        return np.where(beyond, np.inf, out)

    def day_of(self, t: np.ndarray) -> np.ndarray:
        """Integer day index of `t`, clipped into the padded range."""
        return np.clip(np.floor(t), 0, len(self.season) - 1).astype(np.int64)

    def congestion_at(self, t: np.ndarray) -> np.ndarray:
        return self.congestion[self.day_of(t)]

    def seconds(self, t: np.ndarray) -> np.ndarray:
        """Whole seconds since 1970-01-01 UTC; rounding is monotone so orders are kept."""
        return self.epoch_s + np.rint(np.asarray(t) * SECONDS_PER_DAY).astype(np.int64)


def _black_fridays(years: range) -> list[date]:
    out = []
    for year in years:
        first = date(year, 11, 1)
        first_thursday = 1 + (3 - first.weekday()) % 7
        out.append(date(year, 11, first_thursday + 22))
    return out


def add_months(start: date, months: int) -> date:
    """The first day of the month `months` months after `start`'s month."""
    index = start.month - 1 + months
    return date(start.year + index // 12, index % 12 + 1, 1)


def build_timeline(start: date, months: int, params: SeasonalityParams) -> Timeline:
    """Build the calendar of `months` months from `start` (which must be a month's first day).

    Args:
        start: First simulated day.
        months: Number of calendar months simulated.
        params: Seasonality parameters.

    Returns:
        The timeline with daily seasonality, congestion and the seasonal clock.

    Raises:
        ValueError: If `start` is not the first day of a month or `months` < 1.
    """
    if start.day != 1:
        raise ValueError(f"start must be the first day of a month, got {start}")
    if months < 1:
        raise ValueError(f"months must be at least 1, got {months}")
    end = add_months(start, months)
    days = (end - start).days
    total = days + PAD_DAYS
    epoch_day = (start - date(1970, 1, 1)).days
    day_numbers = epoch_day + np.arange(total)
    dates = day_numbers.astype("datetime64[D]")
    weekday = ((day_numbers + 3) % 7).astype(np.int64)  # 1970-01-01 was a Thursday
    years = dates.astype("datetime64[Y]")
    doy = (dates - years).astype(np.int64) + 1
    month_of = (dates.astype("datetime64[M]") - years).astype(np.int64) + 1
    dom = (dates - dates.astype("datetime64[M]")).astype(np.int64) + 1

    base = 1.0 - params.summer_dip * np.exp(
        -0.5 * ((doy - params.summer_center_doy) / params.summer_width_days) ** 2
    )
    base += params.christmas_boost * np.exp(
        -0.5 * ((doy - params.christmas_center_doy) / params.christmas_width_days) ** 2
    )
    base += params.january_sales * ((month_of == 1) & (dom <= 15))
    base *= np.where((month_of == 12) & (dom >= 24) & (dom <= 26), params.christmas_lull, 1.0)
    first_year = start.year
    last_year = int(years[-1].astype(int)) + 1970
    black_friday = []
    for bf in _black_fridays(range(first_year, last_year + 1)):
        offset = (bf - start).days
        black_friday.append(offset)
        for i, factor in enumerate(params.black_friday_week):
            d = offset - 4 + i  # Monday before Black Friday through Cyber Monday
            if 0 <= d < total:
                base[d] *= factor
    weekday_factor = np.asarray(params.weekday)[weekday]
    season = base * weekday_factor
    norm = season[:days].mean()
    season = season / norm
    base = base / base[:days].mean()

    window = params.congestion_window_days
    excess = params.congestion_weight * np.maximum(base - 1.0, 0.0)
    cum_excess = np.concatenate([[0.0], np.cumsum(excess)])
    lo = np.maximum(np.arange(1, total + 1) - window, 0)
    congestion = (cum_excess[1:] - cum_excess[lo]) / (np.arange(1, total + 1) - lo)

    hourly = np.asarray(params.hourly, dtype=np.float64)
    hourly = hourly / hourly.sum()
    month_starts = np.array(
        [(add_months(start, m) - start).days for m in range(months)], dtype=np.int64
    )
    return Timeline(
        start=start,
        days=days,
        epoch_s=epoch_day * SECONDS_PER_DAY,
        season=season,
        base=base,
        congestion=congestion,
        weekday=weekday,
        cum_season=np.concatenate([[0.0], np.cumsum(season)]),
        hourly=hourly,
        cum_hourly=np.concatenate([[0.0], np.cumsum(hourly)]),
        month_starts=month_starts,
        black_friday=np.asarray(black_friday, dtype=np.int64),
    )
