#!/bin/bash
BLUE='\033[0;34m'
RED='\033[0;31m'
NC='\033[0m'
echo -e "${BLUE}[INFO]${NC} checking that the module is loaded"
echo -e "${RED}[FAIL]${NC} module vexfs is not loaded" >&2
exit 1
