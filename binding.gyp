{
  "variables": {
    "nvcc%": "<!(command -v nvcc || echo /usr/local/cuda/bin/nvcc)",
    "has_cuda%": "<!(node -e \"process.stdout.write(process.env.LLAVA_NO_CUDA ? 'false' : String(require('fs').existsSync(process.argv[1])))\" \"<!(command -v nvcc || echo /usr/local/cuda/bin/nvcc)\")"
  },
  "targets": [
    {
      "target_name": "llava_native",
      "sources": ["<!@(node scripts/sources.js cpp)"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "cpp", "cuda"],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags!": ["-fno-exceptions", "-O2"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-O2"],
      "cflags_cc": ["-std=c++17", "-O3", "-fexceptions", "-mavx2", "-mfma", "-mf16c", "-fno-math-errno", "-pthread"],
      "ldflags": ["-pthread"],
      "conditions": [
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
                       "-gencode", "arch=compute_80,code=sm_80", "-gencode", "arch=compute_90,code=sm_90",
                       "-gencode", "arch=compute_90,code=compute_90",
                       "--expt-relaxed-constexpr", "-c", "<(RULE_INPUT_PATH)", "-o", "<@(_outputs)"],
            "message": "nvcc <(RULE_INPUT_PATH)",
            "process_outputs_as_sources": 1
          }]
        }]
      ]
    }
  ]
}
