//! OCI images: references, registry pull, local import, layer merge, root image packing, cache
