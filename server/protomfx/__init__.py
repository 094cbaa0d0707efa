"""Protobuf messages of the Mainflux `protomfx` package.

The `.proto` sources live next to the generated `*_pb2.py` / `*_pb2.pyi` modules; regenerate them
with `scripts/gen-proto` after editing a source. Only message code is generated: gRPC stubs and
handlers are built by hand in `server.identity` from the method paths below.
"""

THINGS_SERVICE = "protomfx.ThingsService"
AUTH_SERVICE = "protomfx.AuthService"

CAN_USER_ACCESS_THING = f"/{THINGS_SERVICE}/CanUserAccessThing"
IDENTIFY_THING = f"/{THINGS_SERVICE}/Identify"
GET_KEY_BY_THING_ID = f"/{THINGS_SERVICE}/GetKeyByThingID"
IDENTIFY_USER = f"/{AUTH_SERVICE}/Identify"
