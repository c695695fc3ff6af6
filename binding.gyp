{
  "variables": {
    "nvcc%": "<!(command -v nvcc || echo /usr/local/cuda/bin/nvcc)",
    "has_cuda%": "<!(node -e \"process.stdout.write(process.env.LLAVA_NO_CUDA ? 'false' : String(require('fs').existsSync(process.argv[1])))\" \"<!(command -v nvcc || echo /usr/local/cuda/bin/nvcc)\")"
  },
  "target_defaults": {
    "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "cpp", "cuda"],
    "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_DEPRECATED"],
    "cflags!": ["-fno-exceptions", "-O2"],
    "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-O2"],
    "cflags_cc": ["-std=c++17", "-O3", "-fexceptions", "-fno-math-errno", "-pthread", "-fPIC"]
  },
  "targets": [
    {
      "target_name": "llava_native",
      "sources": ["<!@(node scripts/sources.js cpp)"],
      "ldflags": ["-pthread"],
      "libraries": ["-ldl"],
      "conditions": [
        ["target_arch=='x64'", {"dependencies": ["llava_avx2", "llava_avx512"]}],
        ["has_cuda=='true'", {
          "sources": ["<!@(node scripts/sources.js cuda)"],
          "defines": ["LLAVA_WITH_CUDA=1"],
          "include_dirs": ["/usr/local/cuda/include"],
          "libraries": ["-L/usr/local/cuda/lib64", "-lcudart_static", "-ldl", "-lpthread", "-lrt"],
          "rules": [{
            "rule_name": "nvcc",
            "extension": "cu",
            "inputs": ["<(RULE_INPUT_PATH)"],
            "outputs": ["<(INTERMEDIATE_DIR)/<(RULE_INPUT_ROOT).o"],
            "action": ["<(nvcc)", "-std=c++17", "-O3", "-Xcompiler", "-fPIC", "-Icuda", "-Icpp",
                       "-gencode", "arch=compute_80,code=sm_80", "-gencode", "arch=compute_90a,code=sm_90a",
                       "-gencode", "arch=compute_90,code=compute_90",
                       "--expt-relaxed-constexpr", "-c", "<(RULE_INPUT_PATH)", "-o", "<@(_outputs)"],
            "message": "nvcc <(RULE_INPUT_PATH)",
            "process_outputs_as_sources": 1
          }]
        }]
      ]
    }
  ],
  "conditions": [
    ["target_arch=='x64'", {
      "targets": [
        {
          "target_name": "llava_avx2",
          "type": "static_library",
          "sources": ["<!@(node scripts/sources.js avx2)"],
          "defines": ["LLAVA_ISA_BUILD=1"],
          "cflags_cc": ["-mavx2", "-mfma", "-mf16c"]
        },
        {
          "target_name": "llava_avx512",
          "type": "static_library",
          "sources": ["<!@(node scripts/sources.js avx512)"],
          "cflags_cc": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx2", "-mfma", "-mf16c"]
        }
      ]
    }]
  ]
}
