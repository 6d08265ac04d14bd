// Safetensors <-> libtorch: dtype mapping and loading a file as torch tensors
// (core/safetensors.h holds the torch-free reader and writer).
//
// Example:
//   auto tensors = read_safetensors_to_torch("model.safetensors");
//   torch::Tensor items = tensors.at("items.weight");   // [n_items + 1, D] float32
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <string_view>

#include <torch/types.h>

#include "genrec/core/safetensors.h"

namespace genrec {

// "F32" for torch::kFloat, ...; throws InvalidInput for types safetensors cannot hold
// (complex, quantized).
std::string safetensors_dtype_of(torch::ScalarType type);
// torch::kFloat for "F32", ...; throws InvalidInput for dtypes torch 1.13 has no type for
// (U16, U32, U64, F8_E4M3, F8_E5M2).
torch::ScalarType torch_dtype_of(std::string_view dtype);

// A copy of one tensor of an open file, in memory owned by torch (CPU, contiguous). BOOL data
// must hold only 0 and 1 bytes (InvalidInput otherwise).
torch::Tensor to_torch(const SafetensorsFile& file, const SafetensorsView& view);

// Every tensor of a safetensors file, copied into torch tensors (CPU), by name.
std::map<std::string, torch::Tensor> read_safetensors_to_torch(const std::filesystem::path& path);

// Writes named tensors (any device and layout; copied to contiguous CPU little-endian data)
// with string metadata; see write_safetensors().
void write_safetensors_from_torch(const std::filesystem::path& path, const std::map<std::string, torch::Tensor>& tensors,
                                  const std::map<std::string, std::string>& metadata = {});

}  // namespace genrec
