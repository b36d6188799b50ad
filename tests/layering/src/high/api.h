#pragma once
// Fixture: a higher component using a lower one (allowed).
#include "low/upward.h"
