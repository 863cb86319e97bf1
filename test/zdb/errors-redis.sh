KIND=redis
source "$(dirname "$0")/errors.sh"
