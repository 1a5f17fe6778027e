# TEMPORARY stand-in until the shared-parts branch lands.
BACKGROUND = -1
IGNORE = -2
