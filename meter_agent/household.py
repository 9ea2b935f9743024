"""A household's net grid power at any Unix time: rooftop PV minus household load (pure).

Deterministic for a seed and cheap per call (a few microseconds), so the Modbus simulator and
``peerwatt simulate`` can evaluate it for thousands of homes without pandas or numpy.

PV: solar geometry written out here (Spencer's 1971 Fourier series for the declination and the
equation of time, hour angle, solar elevation and azimuth), a simple clear-sky model (Haurwitz
global horizontal irradiance, Meinel beam irradiance with Kasten-Young air mass, the rest as
isotropic diffuse, ground reflectance 0.2) transposed onto a fixed plane - by default tilted
30 degrees and facing the equator (azimuth 180 in the northern hemisphere, 0 in the southern) -
times a performance ratio (0.85) and the peak power. Clouds are a seeded stochastic process:
each day is clear, mixed or overcast, and a clear-sky index varies within the day by linear
interpolation between random 10-minute knots. The day-type probabilities and index levels are
illustrative, not a climatology; nothing here is a forecast or a validated yield model.

Load: the shape of the BDEW H0 standard load profile (German household standard load profile):
96 quarter-hour values for each season (winter, transition, summer) and day type (workday,
Saturday, Sunday), as distributed in demandlib 0.2.2 (``selp_series.csv``, MIT licence), times
the BDEW fourth-degree "dynamisation" polynomial over the day of the year, normalised so that
a calendar year sums to the household's annual consumption. Holidays are not modelled (BDEW
treats them as Sundays). The profile is a statistical average over many German households on
local standard time (here UTC + round(lon / 15) h, no daylight saving time); one real household
is far spikier, so seeded multiplicative noise per day, quarter-hour and minute is added (mean
1, so the annual total is kept on average). In the southern hemisphere the seasons are shifted
by half a year.
"""

from __future__ import annotations

import calendar
import math
import time as _time
from functools import lru_cache

_MASK = (1 << 64) - 1
_SECONDS_PER_DAY = 86400

# BDEW H0 shape: (season, day type) -> 96 quarter-hour values in units of 0.01 W for an
# annual consumption of 1,000 kWh, quarter-hour q covering [q * 15 min, (q + 1) * 15 min) local
# standard time. Source: demandlib 0.2.2, demandlib/bdew/bdew_data/selp_series.csv, column h0.
# fmt: off
H0_SHAPE: dict[tuple[str, str], tuple[int, ...]] = {
    ("winter", "workday"): (
        6760, 6084, 5488, 4992, 4624, 4364, 4192, 4080, 4008, 3964, 3936, 3912,
        3884, 3856, 3836, 3828, 3844, 3880, 3932, 3996, 4088, 4308, 4764, 5576,
        6800, 8280, 9804, 11152, 12164, 12852, 13272, 13484, 13544, 13476, 13312, 13068,
        12772, 12456, 12156, 11904, 11724, 11620, 11572, 11568, 11604, 11700, 11872, 12152,
        12540, 12956, 13304, 13484, 13424, 13172, 12804, 12400, 12024, 11684, 11364, 11068,
        10792, 10544, 10356, 10236, 10216, 10316, 10564, 10988, 11600, 12372, 13264, 14232,
        15236, 16220, 17124, 17896, 18476, 18820, 18892, 18644, 18068, 17272, 16392, 15564,
        14892, 14340, 13840, 13316, 12720, 12048, 11328, 10572, 9796, 9020, 8248, 7492,
    ),
    ("winter", "saturday"): (
        7084, 6816, 6592, 6324, 5948, 5496, 5044, 4660, 4396, 4228, 4136, 4080,
        4032, 3988, 3948, 3912, 3876, 3848, 3832, 3828, 3848, 3908, 4032, 4244,
        4564, 4992, 5524, 6160, 6892, 7708, 8608, 9572, 10584, 11580, 12488, 13232,
        13764, 14112, 14332, 14484, 14604, 14720, 14844, 14980, 15148, 15352, 15600, 15896,
        16240, 16576, 16844, 16980, 16940, 16756, 16476, 16148, 15812, 15488, 15180, 14900,
        14652, 14444, 14276, 14148, 14084, 14168, 14488, 15148, 16192, 17460, 18736, 19808,
        20516, 20912, 21112, 21224, 21320, 21300, 21036, 20392, 19292, 17900, 16444, 15148,
        14188, 13532, 13100, 12816, 12608, 12408, 12164, 11820, 11336, 10740, 10084, 9404,
    ),
    ("winter", "sunday"): (
        8744, 8112, 7500, 6908, 6344, 5820, 5364, 4992, 4728, 4548, 4424, 4328,
        4236, 4148, 4068, 3996, 3932, 3884, 3848, 3828, 3828, 3840, 3868, 3912,
        3968, 4040, 4132, 4244, 4400, 4660, 5108, 5828, 6860, 8132, 9516, 10904,
        12192, 13372, 14440, 15396, 16256, 17048, 17804, 18560, 19332, 20060, 20664, 21056,
        21180, 21020, 20588, 19892, 18956, 17872, 16732, 15648, 14696, 13888, 13212, 12652,
        12196, 11816, 11476, 11152, 10832, 10588, 10524, 10736, 11288, 12088, 13004, 13900,
        14680, 15352, 15968, 16564, 17156, 17644, 17904, 17812, 17288, 16472, 15556, 14732,
        14140, 13720, 13372, 12984, 12480, 11860, 11160, 10404, 9624, 8840, 8068, 7324,
    ),
    ("transition", "workday"): (
        7776, 6956, 6240, 5660, 5248, 4972, 4788, 4660, 4552, 4456, 4380, 4328,
        4304, 4300, 4312, 4328, 4344, 4372, 4416, 4496, 4628, 4892, 5376, 6160,
        7288, 8632, 10008, 11236, 12180, 12848, 13292, 13568, 13716, 13772, 13768, 13732,
        13692, 13640, 13572, 13484, 13368, 13244, 13136, 13068, 13064, 13152, 13364, 13732,
        14260, 14824, 15280, 15480, 15324, 14892, 14316, 13732, 13240, 12836, 12484, 12152,
        11816, 11484, 11172, 10904, 10692, 10568, 10544, 10652, 10908, 11304, 11836, 12484,
        13240, 14060, 14908, 15732, 16488, 17108, 17516, 17644, 17456, 17048, 16568, 16148,
        15888, 15720, 15540, 15232, 14720, 14024, 13208, 12320, 11404, 10484, 9564, 8656,
    ),
    ("transition", "saturday"): (
        8020, 7508, 7072, 6660, 6228, 5800, 5404, 5076, 4840, 4676, 4568, 4496,
        4436, 4388, 4352, 4328, 4312, 4308, 4312, 4328, 4356, 4420, 4540, 4744,
        5052, 5488, 6072, 6824, 7748, 8788, 9864, 10904, 11844, 12668, 13384, 13984,
        14476, 14884, 15236, 15564, 15892, 16204, 16488, 16728, 16916, 17076, 17252, 17480,
        17772, 18076, 18312, 18396, 18272, 17980, 17584, 17144, 16716, 16308, 15924, 15564,
        15232, 14944, 14716, 14564, 14504, 14540, 14668, 14900, 15224, 15644, 16148, 16728,
        17376, 18040, 18672, 19228, 19652, 19900, 19940, 19724, 19236, 18524, 17664, 16728,
        15796, 14952, 14288, 13900, 13828, 13916, 13952, 13732, 13108, 12192, 11148, 10156,
    ),
    ("transition", "sunday"): (
        9340, 8684, 8116, 7576, 7012, 6448, 5928, 5492, 5172, 4944, 4784, 4660,
        4552, 4456, 4380, 4328, 4308, 4308, 4316, 4328, 4328, 4324, 4324, 4328,
        4352, 4432, 4604, 4912, 5388, 6044, 6884, 7908, 9108, 10428, 11800, 13152,
        14416, 15556, 16532, 17312, 17880, 18312, 18700, 19144, 19700, 20304, 20848, 21224,
        21348, 21180, 20700, 19892, 18764, 17464, 16168, 15064, 14280, 13756, 13388, 13068,
        12708, 12312, 11900, 11484, 11100, 10776, 10556, 10488, 10596, 10880, 11320, 11904,
        12600, 13368, 14152, 14900, 15552, 16060, 16360, 16396, 16144, 15708, 15220, 14816,
        14588, 14472, 14360, 14148, 13752, 13184, 12472, 11652, 10760, 9836, 8924, 8072,
    ),
    ("summer", "workday"): (
        8636, 7696, 6884, 6244, 5804, 5528, 5360, 5244, 5136, 5024, 4924, 4828,
        4744, 4684, 4656, 4660, 4712, 4800, 4924, 5076, 5264, 5564, 6052, 6824,
        7920, 9196, 10476, 11568, 12344, 12856, 13200, 13484, 13780, 14072, 14320, 14484,
        14532, 14488, 14376, 14232, 14080, 13948, 13852, 13816, 13864, 14008, 14264, 14648,
        15152, 15672, 16076, 16232, 16048, 15608, 15020, 14400, 13844, 13360, 12936, 12568,
        12244, 11964, 11740, 11568, 11464, 11424, 11460, 11568, 11760, 12032, 12388, 12816,
        13324, 13892, 14504, 15148, 15796, 16380, 16828, 17064, 17040, 16832, 16528, 16232,
        16012, 15844, 15684, 15480, 15192, 14788, 14256, 13568, 12720, 11748, 10708, 9656,
    ),
    ("summer", "saturday"): (
        8984, 8488, 8072, 7656, 7172, 6656, 6160, 5744, 5448, 5256, 5144, 5076,
        5032, 5004, 4988, 4992, 5012, 5040, 5064, 5076, 5076, 5088, 5160, 5328,
        5620, 6040, 6584, 7240, 8004, 8848, 9740, 10652, 11560, 12440, 13280, 14068,
        14780, 15396, 15892, 16232, 16408, 16472, 16500, 16564, 16712, 16944, 17236, 17560,
        17896, 18184, 18372, 18396, 18216, 17868, 17412, 16896, 16376, 15884, 15464, 15148,
        14956, 14856, 14800, 14732, 14624, 14504, 14416, 14400, 14492, 14696, 15000, 15396,
        15876, 16400, 16920, 17396, 17780, 18052, 18180, 18144, 17928, 17564, 17096, 16564,
        16012, 15504, 15112, 14900, 14892, 14960, 14936, 14648, 13980, 13028, 11952, 10904,
    ),
    ("summer", "sunday"): (
        10008, 9252, 8592, 7992, 7412, 6868, 6388, 5992, 5700, 5496, 5352, 5244,
        5152, 5076, 5024, 4992, 4992, 5000, 5008, 4992, 4948, 4892, 4840, 4828,
        4868, 4984, 5188, 5492, 5920, 6488, 7224, 8156, 9288, 10564, 11904, 13232,
        14484, 15616, 16600, 17396, 17996, 18460, 18872, 19308, 19828, 20376, 20868, 21224,
        21372, 21276, 20904, 20224, 19244, 18088, 16920, 15896, 15140, 14596, 14160, 13732,
        13240, 12700, 12156, 11652, 11224, 10888, 10668, 10572, 10612, 10776, 11044, 11404,
        11836, 12340, 12916, 13568, 14280, 14976, 15572, 15980, 16136, 16084, 15896, 15648,
        15396, 15156, 14932, 14732, 14544, 14300, 13920, 13316, 12444, 11380, 10248, 9156,
    ),
}
# fmt: on

_SHAPE_DAILY_SUM = {key: sum(values) for key, values in H0_SHAPE.items()}

# Streams of the seeded noise (one hash per stream and index keeps calls order-independent).
_STREAM_DAY_KIND, _STREAM_KNOT, _STREAM_LOAD_DAY, _STREAM_LOAD_QUARTER, _STREAM_LOAD_MINUTE = range(5)


def _hash(seed: int, stream: int, index: int) -> int:
    """SplitMix64 of a combination of the three integers (inlined: this is the hot path)."""
    x = (seed * 0x2545F4914F6CDD1D + stream * 0x9E3779B97F4A7C15 + index + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def _uniform(seed: int, stream: int, index: int) -> float:
    """A uniform variate in [0, 1) that depends only on (seed, stream, index)."""
    return (_hash(seed, stream, index) >> 11) * (1.0 / (1 << 53))


def _gauss(seed: int, stream: int, index: int) -> float:
    """An approximately standard-normal variate: Irwin-Hall sum of four 16-bit uniforms."""
    x = (seed * 0x2545F4914F6CDD1D + stream * 0x9E3779B97F4A7C15 + index + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    h = x ^ (x >> 31)  # = _hash(seed, stream, index), inlined
    total = (h & 0xFFFF) + ((h >> 16) & 0xFFFF) + ((h >> 32) & 0xFFFF) + (h >> 48)
    return (total * (1.0 / 65536.0) - 2.0) * 1.7320508075688772


# ---------------------------------------------------------------------------------------------
# Sun and sky


class SolarSite:
    """A fixed PV plane at a location; computes the clear-sky irradiance on it (W/m2).

    Share one site between the households of a neighbourhood: the last result is memoised, so
    evaluating many homes at the same time costs one geometry computation.
    """

    ALBEDO = 0.2

    def __init__(
        self, lat_deg: float, lon_deg: float, tilt_deg: float = 30.0, azimuth_deg: float | None = None
    ) -> None:
        if not -90.0 <= lat_deg <= 90.0 or not -180.0 <= lon_deg <= 180.0:
            raise ValueError("latitude must be -90..90 and longitude -180..180 degrees")
        if not 0.0 <= tilt_deg <= 90.0:
            raise ValueError("tilt must be 0..90 degrees (0 = horizontal)")
        if azimuth_deg is None:
            azimuth_deg = 180.0 if lat_deg >= 0 else 0.0
        if not 0.0 <= azimuth_deg < 360.0:
            raise ValueError("azimuth must be 0..360 degrees clockwise from north (180 = south)")
        self.lat_deg, self.lon_deg = lat_deg, lon_deg
        self.tilt_deg, self.azimuth_deg = tilt_deg, azimuth_deg
        phi = math.radians(lat_deg)
        self._sin_phi, self._cos_phi = math.sin(phi), math.cos(phi)
        beta, az = math.radians(tilt_deg), math.radians(azimuth_deg)
        self._normal = (math.sin(beta) * math.sin(az), math.sin(beta) * math.cos(az), math.cos(beta))
        self._sky_view = (1.0 + math.cos(beta)) / 2.0
        self._ground_view = (1.0 - math.cos(beta)) / 2.0
        self._memo_t: float | None = None
        self._memo_poa = 0.0

    def sun_vector(self, t: float) -> tuple[float, float, float]:
        """Unit vector towards the sun in local (east, north, up) coordinates at Unix time t."""
        days = t / _SECONDS_PER_DAY - 10957.0  # days since 2000-01-01 00:00 UTC
        gamma = 2.0 * math.pi * ((days % 365.2425) / 365.2425) - math.pi / 365.0
        c1, s1 = math.cos(gamma), math.sin(gamma)
        c2, s2 = math.cos(2 * gamma), math.sin(2 * gamma)
        c3, s3 = math.cos(3 * gamma), math.sin(3 * gamma)
        decl = 0.006918 - 0.399912 * c1 + 0.070257 * s1 - 0.006758 * c2 + 0.000907 * s2
        decl += -0.002697 * c3 + 0.00148 * s3
        eot_min = 229.18 * (0.000075 + 0.001868 * c1 - 0.032077 * s1 - 0.014615 * c2 - 0.040849 * s2)
        solar_minutes = (t % _SECONDS_PER_DAY) / 60.0 + eot_min + 4.0 * self.lon_deg
        hour_angle = math.radians(solar_minutes / 4.0 - 180.0)
        sin_d, cos_d = math.sin(decl), math.cos(decl)
        cos_h = math.cos(hour_angle)
        up = self._sin_phi * sin_d + self._cos_phi * cos_d * cos_h
        east = -cos_d * math.sin(hour_angle)
        north = sin_d * self._cos_phi - cos_d * cos_h * self._sin_phi
        return east, north, up

    def elevation_deg(self, t: float) -> float:
        """Solar elevation above the horizon in degrees (negative at night)."""
        return math.degrees(math.asin(max(-1.0, min(1.0, self.sun_vector(t)[2]))))

    def clear_sky_poa_w_m2(self, t: float) -> float:
        """Clear-sky irradiance on the plane (W/m2); 0 when the sun is below the horizon."""
        if t == self._memo_t:
            return self._memo_poa
        east, north, cos_z = self.sun_vector(t)
        poa = 0.0
        if cos_z > 0.0:
            z_deg = math.degrees(math.acos(cos_z))
            air_mass = 1.0 / (cos_z + 0.50572 * (96.07995 - z_deg) ** -1.6364)
            dni = 1353.0 * 0.7 ** (air_mass**0.678)  # Meinel & Meinel
            ghi = 1098.0 * cos_z * math.exp(-0.059 / cos_z)  # Haurwitz
            if dni * cos_z > ghi:
                dni = ghi / cos_z
            dhi = ghi - dni * cos_z
            nx, ny, nz = self._normal
            cos_aoi = east * nx + north * ny + cos_z * nz
            poa = dni * max(cos_aoi, 0.0) + dhi * self._sky_view + ghi * self.ALBEDO * self._ground_view
        self._memo_t, self._memo_poa = t, poa
        return poa


class Weather:
    """Seeded cloudiness: a clear-sky index in [0.05, 1] for any Unix time.

    Each UTC day is clear, mixed or overcast (probabilities below); within it the index moves
    between random knots every 10 minutes. Share one Weather between neighbours: they see the
    same clouds. Illustrative numbers, not a climatology.
    """

    # kind, probability, mean index, variability
    DAY_KINDS = (("clear", 0.25, 0.95, 0.03), ("mixed", 0.40, 0.60, 0.28), ("overcast", 0.35, 0.25, 0.08))
    KNOT_S = 600
    _CACHE_LIMIT = 4096

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._memo_t: float | None = None
        self._memo_index = 1.0
        self._knots: dict[int, float] = {}

    def day_kind(self, t: float) -> str:
        """The kind of the UTC day containing t."""
        return self._kind(int(t // _SECONDS_PER_DAY))[0]

    def _kind(self, day: int) -> tuple[str, float, float, float]:
        u = _uniform(self.seed, _STREAM_DAY_KIND, day)
        for kind in self.DAY_KINDS:
            if u < kind[1]:
                return kind
            u -= kind[1]
        return self.DAY_KINDS[-1]

    def _knot(self, knot: int) -> float:
        value = self._knots.get(knot)
        if value is None:
            _, _, mean, spread = self._kind(knot * self.KNOT_S // _SECONDS_PER_DAY)
            value = min(1.0, max(0.05, mean + spread * _gauss(self.seed, _STREAM_KNOT, knot)))
            if len(self._knots) >= self._CACHE_LIMIT:
                self._knots.clear()
            self._knots[knot] = value
        return value

    def clear_sky_index(self, t: float) -> float:
        """The fraction of clear-sky irradiance that reaches the panels at time t."""
        if t == self._memo_t:
            return self._memo_index
        position = t / self.KNOT_S
        knot = math.floor(position)
        frac = position - knot
        index = self._knot(knot) * (1.0 - frac) + self._knot(knot + 1) * frac
        self._memo_t, self._memo_index = t, index
        return index


# ---------------------------------------------------------------------------------------------
# Household load


def _dynamisation(day_of_year: int) -> float:
    """BDEW's H0 dynamisation polynomial (day of the year 1..366)."""
    d = float(day_of_year)
    return -3.92e-10 * d**4 + 3.2e-7 * d**3 - 7.02e-5 * d**2 + 2.1e-3 * d + 1.24


def _season(month: int, day: int) -> str:
    if month >= 11 or month <= 2 or (month == 3 and day <= 20):
        return "winter"
    if (month == 5 and day >= 15) or 6 <= month <= 8 or (month == 9 and day <= 14):
        return "summer"
    return "transition"


def _day_type(weekday: int) -> str:
    return "saturday" if weekday == 5 else "sunday" if weekday == 6 else "workday"


@lru_cache(maxsize=64)
def _year_factor(year: int, southern: bool) -> float:
    """Multiplier that makes the dynamised shape of ``year`` sum to exactly 1,000 kWh."""
    total_wh = 0.0
    day = calendar.timegm((year, 1, 1, 0, 0, 0)) // _SECONDS_PER_DAY
    while True:
        key, dyn, this_year = _day_key(day, southern)
        if this_year != year:
            break
        total_wh += _SHAPE_DAILY_SUM[key] * 0.01 * dyn * 0.25
        day += 1
    return 1_000_000.0 / total_wh


@lru_cache(maxsize=4096)
def _day_key(day: int, southern: bool) -> tuple[tuple[str, str], float, int]:
    """(season, day type), dynamisation factor and calendar year of a local day number."""
    tm = _time.gmtime(day * _SECONDS_PER_DAY)
    shifted = _time.gmtime((day + 182) * _SECONDS_PER_DAY) if southern else tm
    return (
        (_season(shifted.tm_mon, shifted.tm_mday), _day_type(tm.tm_wday)),
        _dynamisation(shifted.tm_yday),
        tm.tm_year,
    )


@lru_cache(maxsize=4096)
def _day_profile(day: int, southern: bool) -> tuple[tuple[int, ...], float]:
    """The shape of a local day and the factor turning its values (0.01 W per 1,000 kWh/a)
    into W per kWh/a, normalised over that day's calendar year."""
    key, dyn, year = _day_key(day, southern)
    return H0_SHAPE[key], 0.01 * dyn * _year_factor(year, southern) / 1000.0


# ---------------------------------------------------------------------------------------------


class Household:
    """Net grid power of one home: load minus PV, in W (> 0 imports from the grid)."""

    # Multiplicative load noise (mean 1): per day, per quarter-hour and per minute.
    LOAD_NOISE_DAY = 0.15
    LOAD_NOISE_QUARTER = 0.30
    LOAD_NOISE_MINUTE = 0.15

    def __init__(
        self,
        pv_kwp: float = 5.0,
        annual_kwh: float = 3500.0,
        lat: float = 52.52,
        lon: float = 13.40,
        seed: int = 0,
        tilt_deg: float = 30.0,
        azimuth_deg: float | None = None,
        weather: Weather | None = None,
        site: SolarSite | None = None,
        utc_offset_h: float | None = None,
        performance_ratio: float = 0.85,
    ) -> None:
        """``weather`` and ``site`` default to ones made from ``seed`` and the location; pass
        shared objects for a neighbourhood (same clouds, one geometry computation per time)."""
        if not (math.isfinite(pv_kwp) and 0.0 <= pv_kwp <= 1000.0):
            raise ValueError("pv_kwp must be 0..1000 kWp")
        if not (math.isfinite(annual_kwh) and 0.0 <= annual_kwh <= 1_000_000.0):
            raise ValueError("annual_kwh must be 0..1,000,000 kWh")
        if not 0.0 < performance_ratio <= 1.0:
            raise ValueError("performance_ratio must be in (0, 1]")
        self.pv_kwp = pv_kwp
        self.annual_kwh = annual_kwh
        self.seed = seed
        self.site = site or SolarSite(lat, lon, tilt_deg, azimuth_deg)
        self.weather = weather or Weather(seed)
        offset_h = round(self.site.lon_deg / 15.0) if utc_offset_h is None else utc_offset_h
        if not -14.0 <= offset_h <= 14.0:
            raise ValueError("utc_offset_h must be -14..14")
        self.utc_offset_s = int(offset_h * 3600)
        self.performance_ratio = performance_ratio
        self._southern = self.site.lat_deg < 0
        self._day_noise = (None, 1.0)  # one-entry caches: (index, factor)
        self._quarter_noise = (None, 1.0)

    def pv_power_w(self, t: float) -> float:
        """AC power of the PV system at Unix time t (W, >= 0, clipped at the peak power)."""
        if self.pv_kwp == 0.0:
            return 0.0
        poa = self.site.clear_sky_poa_w_m2(t)
        if poa <= 0.0:
            return 0.0
        power = self.pv_kwp * poa * self.performance_ratio * self.weather.clear_sky_index(t)
        return min(power, self.pv_kwp * 1000.0)

    def load_power_w(self, t: float) -> float:
        """Household consumption at Unix time t (W, >= 0); constant within each minute."""
        local = int(t // 1) + self.utc_offset_s
        day = local // _SECONDS_PER_DAY
        shape, factor = _day_profile(day, self._southern)
        quarter = (local % _SECONDS_PER_DAY) // 900
        base = shape[quarter] * factor * self.annual_kwh
        seed = self.seed
        if self._day_noise[0] != day:
            gauss = _gauss(seed, _STREAM_LOAD_DAY, day)
            self._day_noise = (day, max(0.3, 1.0 + self.LOAD_NOISE_DAY * gauss))
        index = local // 900
        if self._quarter_noise[0] != index:
            gauss = _gauss(seed, _STREAM_LOAD_QUARTER, index)
            self._quarter_noise = (index, max(0.05, 1.0 + self.LOAD_NOISE_QUARTER * gauss))
        minute = max(0.3, 1.0 + self.LOAD_NOISE_MINUTE * _gauss(seed, _STREAM_LOAD_MINUTE, local // 60))
        return base * self._day_noise[1] * self._quarter_noise[1] * minute

    def net_power_w(self, t: float) -> float:
        """Grid power at Unix time t (W): > 0 imports from the grid, < 0 exports."""
        return self.load_power_w(t) - self.pv_power_w(t)


def integrate_net_energy(
    household: Household, start: float, end: float, step_s: float
) -> tuple[float, float]:
    """Energy (Wh) imported and exported between two times: the net power integrated with the
    midpoint rule in steps of at most ``step_s`` (what a meter's counters would add up)."""
    imported = exported = 0.0
    t = start
    while t < end:
        step = min(step_s, end - t)
        power = household.net_power_w(t + step / 2.0)
        if power > 0:
            imported += power * step / 3600.0
        else:
            exported -= power * step / 3600.0
        t += step
    return imported, exported
