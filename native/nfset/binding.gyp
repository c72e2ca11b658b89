{
  "targets": [
    {
      "target_name": "nfset",
      "sources": ["nfset.c", "napi.c", "napi-read.c", "napi-apply.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "libraries": ["<!@(pkg-config --libs libnftnl libmnl)"],
      "include_dirs": ["<!@(pkg-config --cflags-only-I libnftnl libmnl | sed -e 's/-I//g')"]
    }
  ]
}
