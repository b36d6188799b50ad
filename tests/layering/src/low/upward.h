#pragma once
// Fixture: a lower component reaching up, which check_layering must refuse.
#include "high/api.h"
