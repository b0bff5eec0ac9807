"""twistd plugin: names the tap module as a string so a plugin scan imports nothing of vibews."""

from twisted.application.service import ServiceMaker

vibews = ServiceMaker(
    "vibews",
    "vibews.tap",
    "The real-time hub between AI coding agents and the people who steer them.",
    "vibews",
)
