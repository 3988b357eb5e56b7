// The whole public C++ API.
#pragma once

#include "cppmega/dispatch.hpp"
#include "cppmega/error.hpp"
#include "cppmega/numerics.hpp"
#include "cppmega/ops/fp8.hpp"
#include "cppmega/ops/fp8_blocks.hpp"
#include "cppmega/ops/fp8_gemv.hpp"
#include "cppmega/ops/topk.hpp"
#include "cppmega/runtime.hpp"
#include "cppmega/tensor.hpp"
