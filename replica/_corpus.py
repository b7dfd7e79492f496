"""Hand-written word lists that the dataset generator (`python -m replica.data --write`) ships.

Only the generator imports this module: a running replica reads the lists back from
replica/data/apod.json.gz, so the shipped file, not this source, is what answers requests and
what the determinism test pins. Edit here, then regenerate.

Scopes tag what a phrase fits: "d" deep sky (galaxies, nebulae, clusters; they have a constellation
and a distance), "s" solar system, "k" sky phenomena seen from the ground.
"""

from __future__ import annotations

# title name, name inside a sentence, kind, scope, constellation, url slug, distance in light-years
OBJECTS: tuple[tuple[str, str, str, str, str, str, int], ...] = (
    ("Andromeda Galaxy", "the Andromeda Galaxy", "galaxy", "d", "Andromeda", "M31", 2_500_000),
    ("Orion Nebula", "the Orion Nebula", "nebula", "d", "Orion", "M42", 1_350),
    ("Horsehead Nebula", "the Horsehead Nebula", "dark nebula", "d", "Orion", "Horsehead", 1_375),
    ("Pleiades", "the Pleiades", "star cluster", "d", "Taurus", "M45", 444),
    ("Crab Nebula", "the Crab Nebula", "supernova remnant", "d", "Taurus", "M1", 6_500),
    ("Eagle Nebula", "the Eagle Nebula", "nebula", "d", "Serpens", "M16", 7_000),
    ("Lagoon Nebula", "the Lagoon Nebula", "nebula", "d", "Sagittarius", "M8", 4_100),
    ("Trifid Nebula", "the Trifid Nebula", "nebula", "d", "Sagittarius", "M20", 5_200),
    ("Whirlpool Galaxy", "the Whirlpool Galaxy", "galaxy", "d", "Canes Venatici", "M51",
     31_000_000),
    ("Sombrero Galaxy", "the Sombrero Galaxy", "galaxy", "d", "Virgo", "M104", 31_000_000),
    ("Pinwheel Galaxy", "the Pinwheel Galaxy", "galaxy", "d", "Ursa Major", "M101", 21_000_000),
    ("Triangulum Galaxy", "the Triangulum Galaxy", "galaxy", "d", "Triangulum", "M33", 2_700_000),
    ("Ring Nebula", "the Ring Nebula", "planetary nebula", "d", "Lyra", "M57", 2_300),
    ("Helix Nebula", "the Helix Nebula", "planetary nebula", "d", "Aquarius", "NGC7293", 650),
    ("Veil Nebula", "the Veil Nebula", "supernova remnant", "d", "Cygnus", "Veil", 2_400),
    ("North America Nebula", "the North America Nebula", "nebula", "d", "Cygnus", "NGC7000", 2_200),
    ("Rosette Nebula", "the Rosette Nebula", "nebula", "d", "Monoceros", "Rosette", 5_200),
    ("Carina Nebula", "the Carina Nebula", "nebula", "d", "Carina", "NGC3372", 8_500),
    ("Tarantula Nebula", "the Tarantula Nebula", "nebula", "d", "Dorado", "NGC2070", 160_000),
    ("Omega Centauri", "Omega Centauri", "globular star cluster", "d", "Centaurus", "OmegaCen",
     17_000),
    ("Hercules Cluster", "the Great Hercules Cluster", "globular star cluster", "d", "Hercules",
     "M13", 25_000),
    ("Large Magellanic Cloud", "the Large Magellanic Cloud", "dwarf galaxy", "d", "Dorado", "LMC",
     160_000),
    ("Small Magellanic Cloud", "the Small Magellanic Cloud", "dwarf galaxy", "d", "Tucana", "SMC",
     200_000),
    ("Heart Nebula", "the Heart Nebula", "nebula", "d", "Cassiopeia", "IC1805", 7_500),
    ("Bubble Nebula", "the Bubble Nebula", "nebula", "d", "Cassiopeia", "NGC7635", 8_000),
    ("Cat's Eye Nebula", "the Cat's Eye Nebula", "planetary nebula", "d", "Draco", "NGC6543",
     3_300),
    ("Pillars of Creation", "the Pillars of Creation", "nebula", "d", "Serpens", "Pillars", 6_500),
    ("Leo Triplet", "the Leo Triplet", "galaxy group", "d", "Leo", "LeoTriplet", 30_000_000),
    ("Stephan's Quintet", "Stephan's Quintet", "galaxy group", "d", "Pegasus", "StephansQuintet",
     290_000_000),
    ("Galactic Center", "the center of our Milky Way", "star field", "d", "Sagittarius", "GalCen",
     26_000),
    ("Double Cluster", "the Double Cluster", "star cluster", "d", "Perseus", "DoubleCluster",
     7_500),
    ("Witch Head Nebula", "the Witch Head Nebula", "reflection nebula", "d", "Eridanus",
     "WitchHead", 900),
    ("Cone Nebula", "the Cone Nebula", "nebula", "d", "Monoceros", "Cone", 2_700),
    ("Soul Nebula", "the Soul Nebula", "nebula", "d", "Cassiopeia", "IC1848", 6_500),
    ("Saturn", "Saturn", "planet", "s", "", "Saturn", 0),
    ("Jupiter", "Jupiter", "planet", "s", "", "Jupiter", 0),
    ("Mars", "Mars", "planet", "s", "", "Mars", 0),
    ("Venus", "Venus", "planet", "s", "", "Venus", 0),
    ("Moon", "the Moon", "moon", "s", "", "Moon", 0),
    ("Sun", "the Sun", "star", "s", "", "Sun", 0),
    ("Comet NEOWISE", "Comet NEOWISE", "comet", "s", "", "NEOWISE", 0),
    ("Comet Hale-Bopp", "Comet Hale-Bopp", "comet", "s", "", "HaleBopp", 0),
    ("Comet Lovejoy", "Comet Lovejoy", "comet", "s", "", "Lovejoy", 0),
    ("Europa", "Jupiter's moon Europa", "moon", "s", "", "Europa", 0),
    ("Titan", "Saturn's moon Titan", "moon", "s", "", "Titan", 0),
    ("Pluto", "Pluto", "dwarf planet", "s", "", "Pluto", 0),
    ("Aurora", "the aurora", "aurora", "k", "", "Aurora", 0),
    ("Milky Way", "the Milky Way", "galaxy", "k", "", "MilkyWay", 0),
    ("Total Solar Eclipse", "a total solar eclipse", "eclipse", "k", "", "Eclipse", 0),
    ("Lunar Eclipse", "a total lunar eclipse", "eclipse", "k", "", "LunarEclipse", 0),
    ("Perseid Meteors", "the Perseid meteor shower", "meteor shower", "k", "", "Perseids", 0),
    ("Geminid Meteors", "the Geminid meteor shower", "meteor shower", "k", "", "Geminids", 0),
    ("Noctilucent Clouds", "noctilucent clouds", "cloud display", "k", "", "NLC", 0),
    ("Zodiacal Light", "the zodiacal light", "glow", "k", "", "Zodiacal", 0),
    ("Star Trails", "star trails", "time-lapse", "k", "", "StarTrails", 0),
)

KIND_PLURALS: dict[str, str] = {
    "galaxy": "galaxies",
    "nebula": "nebulae",
    "dark nebula": "dark nebulae",
    "star cluster": "star clusters",
    "supernova remnant": "supernova remnants",
    "planetary nebula": "planetary nebulae",
    "globular star cluster": "globular star clusters",
    "dwarf galaxy": "dwarf galaxies",
    "galaxy group": "galaxy groups",
    "star field": "star fields",
    "reflection nebula": "reflection nebulae",
    "planet": "planets",
    "moon": "moons",
    "star": "stars",
    "comet": "comets",
    "dwarf planet": "dwarf planets",
    "aurora": "auroras",
    "eclipse": "eclipses",
    "meteor shower": "meteor showers",
    "cloud display": "cloud displays",
    "glow": "glows",
    "time-lapse": "time-lapses",
}

ADJECTIVES: tuple[str, ...] = (
    "colorful", "dusty", "glowing", "ethereal", "majestic", "faint", "bright", "dark", "tangled",
    "cosmic", "starry", "distant", "sharp", "deep", "wide", "mysterious", "delicate", "brilliant",
    "luminous", "turbulent", "silent", "spectacular", "shimmering", "stormy", "twisted", "layered",
    "ghostly", "crimson", "golden", "blue",
)

# title form, sentence form
PLACES: tuple[tuple[str, str], ...] = (
    ("over Iceland", "over the southern coast of Iceland"),
    ("above the Alps", "from a mountain hut high in the Swiss Alps"),
    ("over the Atacama", "over the Atacama Desert in Chile"),
    ("from La Palma", "from La Palma in the Canary Islands"),
    ("over Namibia", "from a dark-sky reserve in Namibia"),
    ("above Lake Tekapo", "above Lake Tekapo, New Zealand"),
    ("over Texas", "from a backyard observatory in Texas"),
    ("over the Dolomites", "over the Dolomites in northern Italy"),
    ("from Mauna Kea", "from the summit of Mauna Kea in Hawaii"),
    ("over the Outback", "from the Australian outback"),
    ("over Lapland", "over a frozen lake in Finnish Lapland"),
    ("over Joshua Tree", "from Joshua Tree National Park in California"),
    ("over the Sahara", "from a camp in the Sahara Desert"),
    ("over the Pyrenees", "from the Pic du Midi in the Pyrenees"),
    ("from Orbit", "from the International Space Station"),
    ("over Patagonia", "over the peaks of Patagonia"),
    ("over the Tetons", "above the Grand Teton range in Wyoming"),
    ("over Mongolia", "from the steppe of central Mongolia"),
)

# title form, sentence form, scopes it fits, 1 if an amateur setup (its images carry a copyright)
INSTRUMENTS: tuple[tuple[str, str, str, int], ...] = (
    ("Hubble", "the Hubble Space Telescope", "ds", 0),
    ("Webb", "the James Webb Space Telescope", "ds", 0),
    ("Chandra", "the Chandra X-ray Observatory", "d", 0),
    ("Spitzer", "the Spitzer Space Telescope", "d", 0),
    ("the VLT", "the Very Large Telescope in Chile", "d", 0),
    ("Gemini", "the Gemini North telescope", "d", 0),
    ("Cassini", "the robotic Cassini spacecraft", "s", 0),
    ("Juno", "NASA's Juno spacecraft", "s", 0),
    ("SDO", "the Solar Dynamics Observatory", "s", 0),
    ("a Backyard Telescope", "a small backyard telescope", "dsk", 1),
    ("a Small Refractor", "a small refracting telescope and a cooled camera", "ds", 1),
    ("a Camera", "a camera on a tripod", "k", 1),
    ("a Wide Lens", "a wide-angle lens on a tracking mount", "dk", 1),
)

# what light the picture was taken in, for titles
LIGHTS: tuple[str, ...] = (
    "Infrared", "Hydrogen Alpha", "X-rays", "Visible Light", "Ultraviolet", "Radio Waves",
    "Natural Color", "Narrowband",
)

# scopes, template: {T} title name, {A} title adjective, {P} title place, {C} constellation,
# {I} title instrument, {L} light
TITLES: tuple[tuple[str, str], ...] = (
    ("dsk", "{T}"),
    ("dsk", "{A} {T}"),
    ("dsk", "The {A} {T}"),
    ("sk", "{T} {P}"),
    ("dsk", "{T} in {L}"),
    ("d", "{T} in {C}"),
    ("ds", "{T} from {I}"),
    ("dsk", "Portrait of {T}"),
    ("dsk", "{T}: {A} and {A2}"),
    ("k", "{A} {T} {P}"),
    ("d", "The {A} Heart of {T}"),
    ("ds", "Close-up of {T}"),
)

# scopes, template: {o} sentence name, {O} the same capitalized, {k} kind, {ks} kind plural,
# {a} adjective, {a2} another, {c} constellation, {p} sentence place, {i} sentence instrument,
# {d} distance, {s} span, {h} exposure hours, {y} year, {m} month name, {e} hemisphere
SENTENCES: tuple[tuple[str, str], ...] = (
    ("dsk", "What's happening to {o}?"),
    ("dsk", "This {a} image of {o} was captured with {i}."),
    ("d", "Seen toward the constellation {c}, {o} lies about {d} light-years away."),
    ("d", "The {k} spans roughly {s} light-years, although its faint outer regions are easy to "
          "miss."),
    ("ds", "The featured picture combines {h} hours of exposure through several color filters."),
    ("dsk", "Careful processing brings out {a} details that the eye alone cannot see."),
    ("d", "Light now arriving from {o} left it long before the first telescopes were built."),
    ("dsk", "Astronomers continue to study {ks} like this one to learn how they form and change."),
    ("dsk", "Next {m}, {o} will be well placed for observers in the {e} Hemisphere."),
    ("d", "Gravity, radiation and magnetic fields all shape the {a} structures seen here."),
    ("d", "Some of the faint smudges in the background are galaxies far beyond {o}."),
    ("dsk", "The image was taken in {y} and released as part of a long-running program."),
    ("d", "Reddish glows mark hydrogen gas, while bluish hues come from starlight reflected by "
          "dust."),
    ("dsk", "A bright star near the edge of the frame shows diffraction spikes made by the "
            "optics themselves."),
    ("dk", "Sharp-eyed viewers may spot a satellite trail crossing the field."),
    ("sk", "This view was recorded {p}, far from city lights."),
    ("ds", "Even a small telescope shows the brightest parts of {o} on a clear, dark night."),
    ("dsk", "{O} is one of the most photographed sights in the sky."),
    ("dsk", "Its {a} appearance has inspired stargazers for generations."),
    ("s", "Robotic spacecraft have revealed {a} and {a2} surface features that telescopes on "
          "Earth could only hint at."),
    ("s", "Its position against the background stars changes from night to night as it moves "
          "along its orbit."),
    ("s", "Seen from Earth, {o} shifts in brightness and apparent size over the months."),
    ("k", "{O} was photographed {p} on a cold, clear night."),
    ("k", "Patience and a little luck are needed to catch {o} at its best."),
    ("k", "The foreground landscape adds a familiar touch of Earth to the {a} sky."),
    ("k", "The scene was assembled from {h} hours of exposures taken one after another."),
    ("dsk", "Many of the {a} features are seen here in greater detail than ever before."),
    ("d", "Young, hot stars still hidden in the dust are slowly carving the {k} into new shapes."),
)

MONTHS: tuple[str, ...] = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)

FIRST_NAMES: tuple[str, ...] = (
    "Ana", "Ben", "Carla", "David", "Elena", "Farid", "Greta", "Hiro", "Ines", "Jonas", "Kavya",
    "Luca", "Maya", "Nikolai", "Olga", "Pablo", "Quentin", "Rosa", "Sven", "Tomasz", "Uma",
    "Victor", "Wen", "Ximena", "Yusuf", "Zoe", "Amir", "Brigitte", "Chen", "Dario",
)

LAST_NAMES: tuple[str, ...] = (
    "Alvarez", "Bergstrom", "Costa", "Dubois", "Eriksen", "Fischer", "Garcia", "Hansen", "Ito",
    "Jovanovic", "Kowalski", "Lindqvist", "Moreau", "Nakamura", "Okafor", "Petrov", "Quinn",
    "Rossi", "Schmidt", "Tanaka", "Ueda", "Varga", "Weber", "Xu", "Yilmaz", "Zeller", "Abbott",
    "Brennan", "Castellano", "Delacroix",
)
