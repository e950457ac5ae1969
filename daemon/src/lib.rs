//! spored: the spore daemon (gRPC control API, state, zone lifecycle)
