# systemd sandboxing for the relay (see systemd.exec(5)). The relay needs the
# network, its state directory and one capability: binding ports below 1024.
# It needs no devices, no other users' files, no kernel knobs and no new
# privileges. `PrivateUsers` stays off: capabilities inside a user namespace
# do not cover the host's network namespace, so ports below 1024 would fail.
{
  CapabilityBoundingSet = [ "CAP_NET_BIND_SERVICE" ];
  AmbientCapabilities = [ "CAP_NET_BIND_SERVICE" ];
  NoNewPrivileges = true;

  ProtectSystem = "strict";
  ProtectHome = true;
  PrivateTmp = true;
  PrivateDevices = true;
  DevicePolicy = "closed";
  ProtectKernelTunables = true;
  ProtectKernelModules = true;
  ProtectKernelLogs = true;
  ProtectControlGroups = true;
  ProtectClock = true;
  ProtectHostname = true;
  ProtectProc = "invisible";
  ProcSubset = "pid";
  KeyringMode = "private";

  RestrictAddressFamilies = [
    "AF_INET"
    "AF_INET6"
    "AF_UNIX"
  ];
  RestrictNamespaces = true;
  RestrictRealtime = true;
  RestrictSUIDSGID = true;
  LockPersonality = true;
  MemoryDenyWriteExecute = true;
  RemoveIPC = true;
  UMask = "0077";

  SystemCallArchitectures = "native";
  SystemCallFilter = [
    "@system-service"
    "~@privileged"
  ];
  SystemCallErrorNumber = "EPERM";
}
