# Sourced by the benchmarks: the bench image, a ~150 MB multi-layer OCI layout (a
# debootstrapped Debian minbase rootfs, 2000 small text files, and 48 MB of large files half
# random), built once and cached in the given directory as <cache>/oci (tag v1).
# Needs debootstrap and Debian's package mirror the first time.

bench_image() {
    local cache=$1
    # Cached: a debootstrapped rootfs as a tar, and the OCI layout built from it.
    rootfs_tar="$cache/debian-minbase.tar"
    if [ ! -s "$rootfs_tar" ]; then
        echo "debootstrapping Debian (once; cached in $cache)" >&2
        rm -rf "$cache/debian"
        debootstrap --variant=minbase bookworm "$cache/debian" http://deb.debian.org/debian >&2
        tar --numeric-owner -C "$cache/debian" -cf "$rootfs_tar.tmp" .
        mv "$rootfs_tar.tmp" "$rootfs_tar"
        rm -rf "$cache/debian"
    fi

    layout="$cache/oci"
    if [ ! -s "$layout/index.json" ]; then
        echo "building the bench image" >&2
        rm -rf "$layout" "$cache/gen"
        mkdir -p "$layout/blobs/sha256" "$cache/gen"
        # Layer 2: many small text files (source-tree-like, compressible).
        mkdir -p "$cache/gen/l2/usr/share/bench"
        for i in $(seq 1 2000); do
            seq "$i" $((i + 3000)) > "$cache/gen/l2/usr/share/bench/file-$i.txt"
        done
        # Layer 3: a few large files, half random (incompressible), half zeros-and-text.
        mkdir -p "$cache/gen/l3/opt/app"
        head -c 24M /dev/urandom > "$cache/gen/l3/opt/app/model.bin"
        # (yes dies of SIGPIPE when head has enough: not a failure.)
        { yes "slate bench payload line" || true; } | head -c 24M > "$cache/gen/l3/opt/app/data.txt"
        tar --numeric-owner --owner=0 --group=0 -C "$cache/gen/l2" -cf "$cache/gen/l2.tar" .
        tar --numeric-owner --owner=0 --group=0 -C "$cache/gen/l3" -cf "$cache/gen/l3.tar" .
        diff_ids=()
        layers_json=()
        for t in "$rootfs_tar" "$cache/gen/l2.tar" "$cache/gen/l3.tar"; do
            diff_ids+=("\"sha256:$(sha256sum "$t" | cut -d' ' -f1)\"")
            gzip -6 -c "$t" > "$cache/gen/layer.gz"
            d=$(sha256sum "$cache/gen/layer.gz" | cut -d' ' -f1)
            mv "$cache/gen/layer.gz" "$layout/blobs/sha256/$d"
            size=$(stat -c %s "$layout/blobs/sha256/$d")
            layers_json+=("{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$d\",\"size\":$size}")
        done
        arch=$(dpkg --print-architecture)
        config="{\"architecture\":\"$arch\",\"os\":\"linux\",\"config\":{\"Cmd\":[\"/bin/bash\"]},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[$(IFS=,; echo "${diff_ids[*]}")]}}"
        printf '%s' "$config" > "$cache/gen/config.json"
        cd_=$(sha256sum "$cache/gen/config.json" | cut -d' ' -f1)
        cp "$cache/gen/config.json" "$layout/blobs/sha256/$cd_"
        manifest="{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:$cd_\",\"size\":$(stat -c %s "$cache/gen/config.json")},\"layers\":[$(IFS=,; echo "${layers_json[*]}")]}"
        printf '%s' "$manifest" > "$cache/gen/manifest.json"
        md=$(sha256sum "$cache/gen/manifest.json" | cut -d' ' -f1)
        cp "$cache/gen/manifest.json" "$layout/blobs/sha256/$md"
        printf '{"imageLayoutVersion":"1.0.0"}' > "$layout/oci-layout"
        printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"v1"}}]}' \
            "$md" "$(stat -c %s "$cache/gen/manifest.json")" > "$layout/index.json"
        rm -rf "$cache/gen"
    fi
}
